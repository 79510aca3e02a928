// Command personify runs personify as a service and carries the operator's
// tools.
//
//	personify serve --dir DIR --key-file KEY --tokens TOKENS   the sidecar and the preference center
//	personify serve --demo                                      the same on the quickstart's sample, in memory
//	personify keygen KEY                                        a new key file (prints only its fingerprint)
//	personify pseudonymize --key-file KEY --column email        CSV or NDJSON in, pseudonyms out
//	personify load --dir DIR --key-file KEY --segment NAME      bulk segment loads from such a file
//	personify verify-receipt --public-key HEX receipt.json      checks an erasure receipt
//	personify inspect DIR                                       what a data directory holds, never a key or identifier
//
// Every command has --help with an example. See the README's "Run as a
// service".
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/personify-go/personify/cmd/personify/internal/ops"
	"github.com/personify-go/personify/cmd/personify/internal/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "personify:") {
			msg = "personify: " + msg
		}
		fmt.Fprintln(stderr, msg)
		return 1
	}
	return 0
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "personify",
		Short: "Segment-based personification as a service, and the operator's tools",
		Long: `personify serves segment lookups, the privacy rights (explain, consent,
suppression, erasure with a signed receipt) and a preference center for the
person, over gRPC, gRPC-Web and JSON over HTTP; and carries the operator's
tools: key generation, pseudonymization of exports, bulk loads, receipt
verification and inspection of a data directory. No command prints a key or
an identifier.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(server.Command())
	root.AddCommand(ops.Commands()...)
	return root
}
