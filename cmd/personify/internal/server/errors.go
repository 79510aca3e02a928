package server

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

// codeOf maps the library's errors to the API's codes. The library's error
// messages name the problem and never hold an identifier or a key, so
// they are passed on as they are.
func codeOf(err error) connect.Code {
	switch {
	case errors.Is(err, anonymize.ErrInvalidIdentifier), errors.Is(err, errBadRequest),
		errors.Is(err, personify.ErrInvalidChange), errors.Is(err, personify.ErrInvalidDefinition),
		errors.Is(err, personify.ErrInvalidTime), errors.Is(err, personify.ErrInvalidName),
		errors.Is(err, personify.ErrTooManyLinked), errors.Is(err, personify.ErrNotLinked),
		errors.Is(err, personify.ErrTooManyPurposes), errors.Is(err, personify.ErrPurposeMismatch):
		return connect.CodeInvalidArgument
	case errors.Is(err, personify.ErrUnknownSegment), errors.Is(err, personify.ErrUnknownPurpose),
		errors.Is(err, personify.ErrUnknownCap):
		return connect.CodeNotFound
	case errors.Is(err, personify.ErrKeyChanged):
		return connect.CodeAborted
	case errors.Is(err, personify.ErrAudienceTooSmall), errors.Is(err, personify.ErrKeyUnavailable),
		errors.Is(err, personify.ErrDoNotReAdd):
		return connect.CodeFailedPrecondition
	case errors.Is(err, personify.ErrClosed):
		return connect.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	}
	return connect.CodeInternal
}

// errBadRequest is wrapped by the sidecar's own refusals of a request;
// errBatchTooLarge by those of a batch over the limit (InvalidArgument, HTTP
// 400: the request is wrong, not the server busy).
var (
	errBadRequest    = errors.New("bad request")
	errBatchTooLarge = fmt.Errorf("%w: batch too large", errBadRequest)
)

func apiError(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	return connect.NewError(codeOf(err), err)
}
