package ops

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/cmd/personify/internal/keyfile"
)

func keygenCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen PATH",
		Short: "Create a new key file (prints only its fingerprint)",
		Long: `keygen creates a new random engine key (256 bits from the operating system's
generator) and writes it to PATH in hex, readable and writable by its owner
only (mode 0600). It refuses to replace an existing file: a new key orphans
every pseudonym made with the old one.

It prints the key's fingerprint (its public name, which the engine's files
and errors use) and the path, never the key.`,
		Example: `  personify keygen /etc/personify/key
  personify serve --dir /var/lib/personify --key-file /etc/personify/key`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k := anonymize.GenerateKey()
			defer k.Destroy()
			if err := keyfile.Write(args[0], k); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "key %s written to %s (mode 0600)\n", k.Fingerprint(), args[0])
			return err
		},
	}
}
