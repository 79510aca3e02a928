// Package ops holds the operator commands of the personify command: keygen,
// pseudonymize, load, verify-receipt and inspect. None of them prints, logs
// or puts in an error an identifier or a key: errors name rows, columns and
// reasons, and keys appear as their fingerprints only.
package ops

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/cmd/personify/internal/keyfile"
)

// Commands returns the operator commands.
func Commands() []*cobra.Command {
	return []*cobra.Command{keygenCommand(), pseudonymizeCommand(), loadCommand(), verifyReceiptCommand(), inspectCommand()}
}

// keyEnv is the environment variable that may hold the key in hex, for
// the commands that take --key-file; errNoKey says neither gave one.
const keyEnv = keyfile.Env

var errNoKey = keyfile.ErrNoKey

// readKey returns the key of --key-file if given (it wins), else the one
// in PERSONIFY_KEY (keyfile.Load).
func readKey(path string) (anonymize.Key, error) { return keyfile.Load(path) }

// hasherFor returns the hasher the --hasher flag names.
func hasherFor(name string) (func(anonymize.Key) anonymize.Hasher, error) {
	switch name {
	case "", "siphash":
		return anonymize.SipHash, nil
	case "hmac-sha256":
		return anonymize.HMACSHA256, nil
	}
	return nil, fmt.Errorf("--hasher %q: want siphash (the engine's default) or hmac-sha256", name)
}

// appendHex appends p as 16 lowercase hex digits, as Pseudonym.String
// writes it, without allocating.
func appendHex(dst []byte, p anonymize.Pseudonym) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, digits[p>>uint(shift)&0xf])
	}
	return dst
}
