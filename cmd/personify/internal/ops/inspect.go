package ops

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/personify-go/personify/personify"
)

func inspectCommand() *cobra.Command {
	var asJSON bool
	var keyFile string
	cmd := &cobra.Command{
		Use:   "inspect DIR",
		Short: "Show what a data directory holds, never a key or identifier",
		Long: `inspect reads a durable data directory (personify.InspectDir) without the key
and without opening the engine: it takes no lock and writes nothing, so it
may run beside the server that has the directory open. It shows each
snapshot (size, sequence number, time, people, segments and their sizes,
purposes), each log (size, key, records and their sequence range, changes by
kind, a torn final frame), the key fingerprints, the receipt public keys,
and the erasures that are durable but not yet physically complete, with the
deadline their receipts promise.

With --key-file it also says whether that key is the directory's current
key (by fingerprint). Damaged files are listed with what is wrong and fail
the command after the listing. --json writes the same as JSON. Nothing it
prints is an identifier, a pseudonym or a key.`,
		Example: `  personify inspect /var/lib/personify
  personify inspect --json /var/lib/personify | jq .pending_erasures
  personify inspect --key-file /etc/personify/key /var/lib/personify`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			info, ierr := personify.InspectDir(args[0])
			match := ""
			if keyFile != "" {
				k, err := readKey(keyFile)
				if err != nil {
					return err
				}
				fp := k.Fingerprint()
				k.Destroy()
				match = fmt.Sprintf("key file %s: key %s is not in the directory's keyring", keyFile, fp)
				for _, ki := range info.Keys {
					if ki.Fingerprint == fp && ki.Current {
						match = fmt.Sprintf("key file %s: key %s is the directory's current key", keyFile, fp)
					} else if ki.Fingerprint == fp {
						match = fmt.Sprintf("key file %s: key %s is a previous key of the directory (until %s)", keyFile, fp, ki.Until.UTC().Format(time.RFC3339))
					}
				}
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				out := struct {
					personify.DirInfo
					KeyFile string `json:"key_file,omitempty"`
				}{info, match}
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				printDirInfo(w, info)
				if match != "" {
					fmt.Fprintln(w, match)
				}
			}
			return ierr
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "write JSON")
	cmd.Flags().StringVar(&keyFile, "key-file", "", "say whether this key file's key is the directory's (compares fingerprints)")
	return cmd
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func printDirInfo(w io.Writer, info personify.DirInfo) {
	fmt.Fprintf(w, "directory %s: %d snapshots, %d logs, last record %d\n", info.Dir, len(info.Snapshots), len(info.Logs), info.Seq)
	for _, s := range info.Snapshots {
		fmt.Fprintf(w, "\nsnapshot %s: %d bytes, seq %d, written %s\n", s.File, s.Size, s.Seq, ts(s.ModTime))
		if s.Problem != "" {
			fmt.Fprintf(w, "  DAMAGED: %s\n", s.Problem)
		}
		if s.Format == 0 {
			continue
		}
		fmt.Fprintf(w, "  format %d, %d people, %d segments, purposes: %s, %d pending erasures listed\n",
			s.Format, s.People, len(s.Segments), orNone(s.Purposes), s.Pending)
		for _, g := range s.Segments {
			extra := ""
			if g.Retention > 0 {
				extra += ", retention " + g.Retention.String()
			}
			if g.Sensitive {
				extra += ", sensitive"
			}
			fmt.Fprintf(w, "  segment %s (purpose %s%s): %d members\n", g.Name, g.Purpose, extra, g.Members)
		}
	}
	for _, l := range info.Logs {
		fmt.Fprintf(w, "\nlog %s: %d bytes, format %d, key %s, modified %s\n", l.File, l.Size, l.Version, l.Key, ts(l.ModTime))
		if l.Records > 0 {
			fmt.Fprintf(w, "  %d records (%d to %d) in %d frames, last change %s\n", l.Records, l.First, l.Last, l.Frames, ts(l.LastChange))
			kinds := make([]string, 0, len(l.Changes))
			for k, n := range l.Changes {
				kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
			}
			slices.Sort(kinds)
			fmt.Fprintf(w, "  changes: %s\n", strings.Join(kinds, ", "))
		} else {
			fmt.Fprintf(w, "  no records (starts at %d)\n", l.Start)
		}
		if l.TornBytes > 0 {
			fmt.Fprintf(w, "  torn final frame: %d bytes (a crash mid-write; Open drops them)\n", l.TornBytes)
		}
		if l.Problem != "" {
			fmt.Fprintf(w, "  DAMAGED: %s\n", l.Problem)
		}
	}
	fmt.Fprintln(w)
	for _, k := range info.Keys {
		state := "current"
		if !k.Current {
			state = "previous, until " + ts(k.Until)
		}
		fmt.Fprintf(w, "key %s (%s)\n", k.Fingerprint, state)
	}
	for _, k := range info.ReceiptKeys {
		fmt.Fprintf(w, "receipt public key %s\n", k)
	}
	if len(info.Temporary) > 0 {
		fmt.Fprintf(w, "unfinished files (Open removes them): %s\n", strings.Join(info.Temporary, ", "))
	}
	fmt.Fprintf(w, "pending erasures: %d\n", len(info.PendingErasures))
	for _, p := range info.PendingErasures {
		fmt.Fprintf(w, "  seq %d: erased at %s, purge by %s (%s)\n", p.Seq, ts(p.ErasedAt), ts(p.PurgeBy), p.File)
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
