package anonymize

import "fmt"

// MarshalText encodes a kind as its name ("email", "phone", "user",
// "device"), so that JSON shows the name; an invalid kind is written as
// "Kind(n)", which UnmarshalText refuses.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes a kind's name, as MarshalText writes it. The
// error does not quote the text.
func (k *Kind) UnmarshalText(b []byte) error {
	for c := KindEmail; c <= KindDeviceID; c++ {
		if string(b) == c.String() {
			*k = c
			return nil
		}
	}
	return fmt.Errorf("anonymize: a kind of %d bytes that is not email, phone, user or device", len(b))
}
