// Package receiptjson reads an erasure receipt as personify.Receipt's JSON,
// the one decoder of receipts that the command's verify-receipt, the
// sidecar's VerifyReceipt and the preference center's verify form share.
package receiptjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/personify-go/personify/personify"
)

// ErrMalformed is wrapped by every error of Decode.
var ErrMalformed = errors.New("malformed receipt")

// Decode reads one receipt from b, at most max bytes (max <= 0: no limit),
// refusing unknown fields (a receipt with fields the library does not write
// is not one it signed) and data after the object. Its errors name the
// problem and the byte offset, never the receipt's content: a receipt given
// to be verified may have been made up, with anything in it.
func Decode(b []byte, max int) (personify.Receipt, error) {
	var r personify.Receipt
	if max > 0 && len(b) > max {
		return r, fmt.Errorf("%w: the receipt is %d bytes, more than %d", ErrMalformed, len(b), max)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return r, fmt.Errorf("%w: the receipt is empty", ErrMalformed)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&r); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF):
			return r, fmt.Errorf("%w: the receipt is not valid JSON: it ends early, at byte %d (truncated?)", ErrMalformed, len(b))
		case errors.As(err, &se):
			return r, fmt.Errorf("%w: the receipt is not valid JSON: syntax error at byte %d", ErrMalformed, se.Offset)
		case errors.As(err, &te):
			return r, fmt.Errorf("%w: the JSON has the wrong shape for a personify receipt: at byte %d, field %s holds a JSON %s, want a %s", ErrMalformed, te.Offset, te.Field, te.Value, te.Type)
		}
		// An unknown field (encoding/json quotes its name, which may be
		// anything: it is left out), or another mismatch.
		return r, fmt.Errorf("%w: the JSON has the wrong shape for a personify receipt (an unknown field, or a value of the wrong kind)", ErrMalformed)
	}
	if d.More() {
		return r, fmt.Errorf("%w: data after its JSON object", ErrMalformed)
	}
	return r, nil
}
