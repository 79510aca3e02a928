// Package keyfile reads and writes the key files of the personify command:
// one engine key as 64 hex digits and a newline, readable by its owner only.
package keyfile

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/personify-go/personify/anonymize"
)

// ErrBadKeyFile is returned for a key file that is not a key, or that
// others may read.
var ErrBadKeyFile = errors.New("personify: bad key file")

// Read returns the key in the file at path. It refuses a file that group or
// others may read or write, as ssh does with a private key: a key others can
// read is a key others hold. The error never holds the file's content.
func Read(path string) (anonymize.Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return anonymize.Key{}, err
	}
	if !fi.Mode().IsRegular() {
		return anonymize.Key{}, fmt.Errorf("%w: %s is not a regular file", ErrBadKeyFile, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return anonymize.Key{}, fmt.Errorf("%w: %s is readable or writable by others (mode %04o): chmod 600 it", ErrBadKeyFile, path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return anonymize.Key{}, err
	}
	return Parse(string(b), path)
}

// Parse reads a key from the content of a key file (or an environment
// variable); name says where it came from, for the error.
func Parse(s, name string) (anonymize.Key, error) {
	k, err := anonymize.KeyFromHex(strings.TrimSpace(s))
	if err != nil {
		return anonymize.Key{}, fmt.Errorf("%w: %s does not hold a key in hex (at least 32 hex digits)", ErrBadKeyFile, name)
	}
	return k, nil
}

// Write creates a key file at path holding k, readable and writable by its
// owner only. It refuses to replace an existing file: overwriting a key
// loses every pseudonym made with it.
func Write(path string, k anonymize.Key) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s exists; a new key would orphan every pseudonym made with the old one (remove it first if you mean it)", ErrBadKeyFile, path)
		}
		return err
	}
	b := k.Bytes()
	_, err = f.WriteString(hex.EncodeToString(b) + "\n")
	clear(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}

// Env is the environment variable that holds the engine key in hex when
// no key file is given.
const Env = "PERSONIFY_KEY"

// ErrNoKey is returned by Load when neither a file nor Env gives a key.
var ErrNoKey = errors.New("no key: give --key-file KEY (a file made by personify keygen) or set " + Env + " to the key in hex")

// Load returns the key in the file at path if path is not empty (it wins),
// else the one in the environment variable Env, else ErrNoKey.
func Load(path string) (anonymize.Key, error) {
	if path != "" {
		return Read(path)
	}
	if v := os.Getenv(Env); v != "" {
		return Parse(v, "$"+Env)
	}
	return anonymize.Key{}, ErrNoKey
}
