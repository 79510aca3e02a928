package anonymize

import (
	"testing"
)

func TestEmailFastPathTakesCommonAddresses(t *testing.T) {
	for _, s := range []string{"Jane.Doe.1984@Example.com", "jane_doe+news@sub-domain.example.co.uk", "J.Doe+x@GMAIL.COM", " x.y@a.io "} {
		var buf [maxHashInput]byte
		fast, ok := appendEmailFast(buf[:0], s)
		if !ok {
			t.Errorf("fast path declined %q", s)
			continue
		}
		exact, err := appendEmailExact(make([]byte, 0, maxHashInput), s)
		if err != nil || string(fast) != string(exact) {
			t.Errorf("%q: fast %q, exact %q %v", s, fast, exact, err)
		}
	}
}
