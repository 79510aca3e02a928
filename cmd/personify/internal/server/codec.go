package server

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The codecs refuse what the library's own decoders refuse: unknown fields
// (a misspelt field would otherwise be ignored, and a lookup answered for
// the wrong question), and they never echo the request's content in an
// error: protobuf's errors quote the offending value, which may be an
// identifier.

type jsonCodec struct{}

func (jsonCodec) Name() string { return "json" }

func (jsonCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", v)
	}
	return protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
}

func (jsonCodec) Unmarshal(b []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", v)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(b, m); err != nil {
		return sanitizeJSONError(err)
	}
	return nil
}

// errMalformed is wrapped by the sanitized decoding errors.
var errMalformed = errors.New("malformed request")

var (
	jsonPos     = regexp.MustCompile(`\(line \d+:\d+\)`)
	jsonProblem = []struct{ match, say string }{
		{"unknown field", "unknown field"},
		{"oneof", "two fields of a oneof (give only one, e.g. pseudonym or identifier)"},
		{"unexpected EOF", "the JSON ends early"},
		{"invalid value for enum", "not a valid enum value"},
		{"invalid value for", "a value of the wrong type"},
		{"duplicate field", "a field given twice"},
		{"unexpected token", "unexpected token (not valid JSON)"},
		{"invalid UTF-8", "invalid UTF-8"},
		{"syntax error", "not valid JSON"},
	}
)

// sanitizeJSONError names the problem and where, never the content.
func sanitizeJSONError(err error) error {
	s := err.Error()
	what := "not a valid request"
	for _, p := range jsonProblem {
		if strings.Contains(s, p.match) {
			what = p.say
			break
		}
	}
	if pos := jsonPos.FindString(s); pos != "" {
		return fmt.Errorf("%w: JSON body %s: %s", errMalformed, pos, what)
	}
	return fmt.Errorf("%w: JSON body: %s", errMalformed, what)
}

type protoCodec struct{}

func (protoCodec) Name() string { return "proto" }

func (protoCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", v)
	}
	return proto.Marshal(m)
}

func (protoCodec) Unmarshal(b []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", v)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: protobuf body: not a valid %s", errMalformed, m.ProtoReflect().Descriptor().FullName())
	}
	if path := unknownField(m.ProtoReflect()); path != "" {
		return fmt.Errorf("%w: protobuf body: unknown field in %s", errMalformed, path)
	}
	return nil
}

// unknownField returns the name of the first message in m holding unknown
// fields, or "".
func unknownField(m protoreflect.Message) string {
	if len(m.GetUnknown()) > 0 {
		return string(m.Descriptor().FullName())
	}
	var found string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				if found = unknownField(l.Get(i).Message()); found != "" {
					return false
				}
			}
		case fd.IsMap():
			return true
		case fd.Message() != nil:
			found = unknownField(v.Message())
		}
		return found == ""
	})
	return found
}
