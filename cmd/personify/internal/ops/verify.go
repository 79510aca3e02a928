package ops

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/personify-go/personify/cmd/personify/internal/receiptjson"
	"github.com/personify-go/personify/personify"
)

// maxReceipt bounds the receipt read.
const maxReceipt = 1 << 20

func verifyReceiptCommand() *cobra.Command {
	var pubs []string
	var keyFile, dir string
	cmd := &cobra.Command{
		Use:   "verify-receipt [FILE|-]",
		Short: "Check an erasure receipt's signature",
		Long: `verify-receipt reads an erasure receipt (the JSON of the personify.Receipt that
Engine.Forget returns) from FILE or standard input, at most 1 MiB, and checks
its Ed25519 signature (personify.VerifyReceipt) against the engine's receipt
public keys: --public-key HEX (64 hex digits; repeat it for the keys of
earlier key rotations), or those of a data directory (--dir, read without the
key), or the one derived from the engine key (--key-file: an engine in memory,
nothing opened). A receipt is valid when one of them verifies it.

It prints what the receipt proves, or fails (exit status 1) saying why: the
JSON is malformed (with its byte offset), the receipt was altered, or it was
signed by another key than those given.`,
		Example: `  personify verify-receipt --public-key 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29 receipt.json
  personify verify-receipt --dir /var/lib/personify < receipt.json
  personify verify-receipt --key-file key receipt.json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := receiptKeys(pubs, keyFile, dir)
			if err != nil {
				return err
			}
			in := "-"
			if len(args) == 1 {
				in = args[0]
			}
			var r io.Reader = cmd.InOrStdin()
			if in != "-" {
				f, err := os.Open(in)
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			b, err := io.ReadAll(io.LimitReader(r, maxReceipt+1))
			if err != nil {
				return err
			}
			if len(b) > maxReceipt {
				return fmt.Errorf("the receipt is larger than %d MiB: not a receipt", maxReceipt>>20)
			}
			rc, err := decodeReceipt(b)
			if err != nil {
				return err
			}
			by, err := verifyWith(rc, keys)
			if err != nil {
				return err
			}
			n := 0
			for _, s := range rc.Segments {
				n += s.Memberships
			}
			legacy := ""
			if rc.Version < 2 {
				legacy = " (a version-1 receipt: its signing key and log position are not covered by the signature)"
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "valid: erasure %s of %d memberships in %d segments, erased at %s, signed by %s%s\n",
				rc.ID, n, len(rc.Segments), rc.ErasedAt.UTC().Format(time.RFC3339), hex.EncodeToString(by), legacy)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&pubs, "public-key", nil, "a receipt public key (Ed25519, 64 hex digits); repeatable")
	fl.StringVar(&dir, "dir", "", "take the receipt public keys of this data directory")
	fl.StringVar(&keyFile, "key-file", "", "derive the receipt public key from this engine key file")
	return cmd
}

// receiptKeys returns the public keys the flags give.
func receiptKeys(pubs []string, keyFile, dir string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, s := range pubs {
		b, err := hex.DecodeString(strings.TrimSpace(s))
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("--public-key: want %d hex digits (an Ed25519 public key)", 2*ed25519.PublicKeySize)
		}
		keys = append(keys, b)
	}
	if dir != "" {
		info, err := personify.InspectDir(dir)
		if err != nil && len(info.ReceiptKeys) == 0 {
			return nil, err
		}
		for _, s := range info.ReceiptKeys {
			if b, err := hex.DecodeString(s); err == nil && len(b) == ed25519.PublicKeySize {
				keys = append(keys, b)
			}
		}
		if len(info.ReceiptKeys) == 0 {
			return nil, fmt.Errorf("%s lists no receipt keys (no snapshot of the current format yet)", dir)
		}
	}
	if keyFile != "" {
		k, err := readKey(keyFile)
		if err != nil {
			return nil, err
		}
		e, err := personify.New(personify.Options{Key: k})
		k.Destroy()
		if err != nil {
			return nil, err
		}
		keys = append(keys, e.ReceiptPublicKeys()...)
		_ = e.Close()
	}
	if len(keys) == 0 {
		return nil, errors.New("no public key: give --public-key HEX, --dir DIR or --key-file KEY")
	}
	return keys, nil
}

// decodeReceipt decodes a receipt's JSON (receiptjson.Decode) and refuses
// one that names no erasure; its errors give the byte offset.
func decodeReceipt(b []byte) (personify.Receipt, error) {
	r, err := receiptjson.Decode(b, 0)
	if err != nil {
		return r, err
	}
	if r.ID == "" || r.Version == 0 || len(r.Signature) == 0 {
		return r, errors.New("malformed receipt: no id, version or signature: is this a personify erasure receipt?")
	}
	return r, nil
}

// verifyWith checks r against each key and returns the one that verifies
// it, or why none does. Until it verifies, nothing of the receipt is
// quoted: it may have been made up.
func verifyWith(r personify.Receipt, keys []ed25519.PublicKey) (ed25519.PublicKey, error) {
	for _, k := range keys {
		if personify.VerifyReceipt(r, k) == nil {
			return k, nil
		}
	}
	for _, k := range keys {
		if hex.EncodeToString(k) == r.SigningKey || r.Version < 2 {
			err := personify.VerifyReceipt(r, k)
			return nil, fmt.Errorf("not valid: the receipt was altered after it was signed (its signature does not match its contents): %w", err)
		}
	}
	return nil, fmt.Errorf("not valid: the receipt names a signing key that is not among the %d public keys given: %w", len(keys), personify.ErrBadReceipt)
}
