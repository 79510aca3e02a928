// Command warehouse loads segments computed elsewhere: a data warehouse
// exports (pseudonym, segment) rows, computing each pseudonym in SQL with
// the HMAC-SHA256 construction that anonymize.HMACSHA256 documents, and the
// engine loads them in bulk with AddPseudonyms. The warehouse's identity
// table (which email belongs with which phone number) is exported the same
// way and loaded with LinkPseudonyms, so that the call centre, which knows
// a customer by phone, finds the segments computed for their email. No
// email address or phone number leaves the warehouse, no key but the HMAC
// subkey enters it, and the app still finds its visitors by email.
//
//	go run ./examples/warehouse
package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/personify-go/personify/anonymize"
	"github.com/personify-go/personify/personify"
)

// The app's key (from a secret store in real life; fixed here so that the
// output is the same on every run). The warehouse never sees it: it gets
// anonymize.HMACSubkey(key), which computes HMAC pseudonyms and nothing else.
const keyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

// exportSQL is what the warehouse runs (PostgreSQL with pgcrypto). The
// emails are already normalized there (trimmed, lowercased; for gmail.com,
// dots and +tags dropped), as anonymize.Email normalizes them.
const exportSQL = `COPY (
  SELECT encode(substring(hmac(convert_to('email:' || email, 'UTF8'),
                               decode(:'hmac_subkey_hex', 'hex'), 'sha256') FROM 1 FOR 8), 'hex') AS pseudonym,
         segment
  FROM customer_segments
) TO STDOUT WITH CSV HEADER`

// identitySQL exports the identity table the same way: for each customer
// with a phone number (normalized to E.164 there, as anonymize.Phone
// does), the email's pseudonym and the phone's.
const identitySQL = `COPY (
  SELECT encode(substring(hmac(convert_to('email:' || email, 'UTF8'), decode(:'hmac_subkey_hex', 'hex'), 'sha256') FROM 1 FOR 8), 'hex') AS email,
         encode(substring(hmac(convert_to('phone:' || phone, 'UTF8'), decode(:'hmac_subkey_hex', 'hex'), 'sha256') FROM 1 FOR 8), 'hex') AS phone
  FROM customers WHERE phone IS NOT NULL
) TO STDOUT WITH CSV HEADER`

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "warehouse:", err)
		os.Exit(1)
	}
}

func run(w io.Writer) error {
	key, err := anonymize.KeyFromHex(keyHex)
	if err != nil {
		return err
	}
	// 0. What the app hands the warehouse, into the warehouse's secret
	// store: the HMAC subkey, never the key. With it the warehouse can
	// compute HMACSHA256 pseudonyms and nothing else (not SipHash
	// pseudonyms, not receipts or journal MACs).
	sub := anonymize.HMACSubkey(key)
	hmacSubkeyHex := hex.EncodeToString(sub.Bytes())
	sub.Destroy()

	// 1. The warehouse's export, computed here the way the SQL above
	// computes it (crypto/hmac under the subkey, not this library), to show
	// that the two agree byte for byte.
	subkey, err := hex.DecodeString(hmacSubkeyHex)
	if err != nil {
		return err
	}
	export := warehouseExport(subkey)
	clear(subkey)
	fmt.Fprintf(w, "the warehouse runs (psql, with -v hmac_subkey_hex=...):\n%s\n%s\n\n", exportSQL, identitySQL)
	fmt.Fprintf(w, "warehouse export: %d rows, for example:\n", strings.Count(export, "\n")-1)
	for _, line := range strings.SplitN(export, "\n", 4)[:3] {
		fmt.Fprintf(w, "  %s\n", line)
	}

	// 2. The app's engine uses the same construction, under the same
	// subkey, which HMACSHA256 derives from the key: Options.Hasher.
	e, err := personify.New(personify.Options{Key: key, Hasher: anonymize.HMACSHA256, K: 10})
	if err != nil {
		return err
	}
	defer e.Close()
	if err := e.DefinePurpose(personify.Purpose{Name: "personalization", Model: personify.OptOut}); err != nil {
		return err
	}

	// 3. Load the CSV: group the rows by segment, then one AddPseudonyms
	// per segment (bulk, any order).
	bySegment, err := readExport(strings.NewReader(export))
	if err != nil {
		return err
	}
	for _, name := range []string{"churn-risk", "high-value", "weekend-shoppers"} {
		if err := e.Define(personify.Segment{Name: name, Purpose: "personalization"}); err != nil {
			return err
		}
		if err := e.AddPseudonyms(name, bySegment[name]); err != nil {
			return err
		}
		n, _ := e.Len(name)
		fmt.Fprintf(w, "loaded %-16s %5d members\n", name, n)
	}

	// 4. A visitor signs in with their email, typed their way: the app
	// finds the memberships the warehouse computed.
	visitor := anonymize.Email("  Customer0042@Example.COM")
	p, err := e.Pseudonym(visitor)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nvisitor %v has pseudonym %v\n", visitor, p)
	fmt.Fprintf(w, "segments: %v\n", e.Segments(nil, p, "personalization"))

	// 5. The identity table: one LinkPseudonyms call links every email
	// with its phone; the engine learns which pseudonyms belong together,
	// never the email or the number.
	subkey, err = hex.DecodeString(hmacSubkeyHex)
	if err != nil {
		return err
	}
	identities := identityExport(subkey)
	clear(subkey)
	people, err := readIdentities(strings.NewReader(identities))
	if err != nil {
		return err
	}
	if err := e.LinkPseudonyms(people...); err != nil {
		return err
	}
	st := e.Stats()
	fmt.Fprintf(w, "\nlinked %d phone numbers: %d people under %d pseudonyms\n", len(people), st.People, st.Pseudonyms)

	// 6. The call centre knows the customer by phone, written its way.
	caller := anonymize.Phone("+44 (0)20 7946 0042")
	q, err := e.Pseudonym(caller)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "caller %v has pseudonym %v\n", caller, q)
	fmt.Fprintf(w, "segments: %v\n", e.Segments(nil, q, "personalization"))
	return nil
}

// phoneOf is customer i's phone number, normalized (E.164) as the
// warehouse stores it, for every third customer below 1,000 (Ofcom's
// range for drama, +44 20 7946 0000-0999).
func phoneOf(i int) (string, bool) {
	if i%3 != 0 || i >= 1000 {
		return "", false
	}
	return fmt.Sprintf("+44207946%04d", i), true
}

// identityExport returns the CSV identitySQL would produce.
func identityExport(hmacSubkey []byte) string {
	pseudonym := func(tagged string) string {
		mac := hmac.New(sha256.New, hmacSubkey)
		mac.Write([]byte(tagged))
		return hex.EncodeToString(mac.Sum(nil)[:8])
	}
	var b bytes.Buffer
	cw := csv.NewWriter(&b)
	_ = cw.Write([]string{"email", "phone"})
	for i := range 3000 {
		if phone, ok := phoneOf(i); ok {
			_ = cw.Write([]string{pseudonym(fmt.Sprintf("email:customer%04d@example.com", i)), pseudonym("phone:" + phone)})
		}
	}
	cw.Flush()
	return b.String()
}

// readIdentities parses the identity CSV into one link per customer.
func readIdentities(r io.Reader) ([][]personify.LinkedPseudonym, error) {
	rows, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	var out [][]personify.LinkedPseudonym
	for i, row := range rows[1:] {
		if len(row) != 2 {
			return nil, fmt.Errorf("line %d: want email,phone", i+2)
		}
		email, err := anonymize.ParsePseudonym(row[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+2, err)
		}
		phone, err := anonymize.ParsePseudonym(row[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+2, err)
		}
		out = append(out, []personify.LinkedPseudonym{{Kind: anonymize.KindEmail, Pseudonym: email}, {Kind: anonymize.KindPhone, Pseudonym: phone}})
	}
	return out, nil
}

// warehouseExport returns the CSV the SQL query would produce for 3,000
// synthetic customers, given the HMAC subkey: each in high-value if their
// number is divisible by 7, in churn-risk if by 5, in weekend-shoppers if
// by 2.
func warehouseExport(hmacSubkey []byte) string {
	var b bytes.Buffer
	cw := csv.NewWriter(&b)
	_ = cw.Write([]string{"pseudonym", "segment"})
	for i := range 3000 {
		email := fmt.Sprintf("customer%04d@example.com", i) // normalized in the warehouse
		mac := hmac.New(sha256.New, hmacSubkey)
		mac.Write([]byte("email:" + email))
		pseudonym := hex.EncodeToString(mac.Sum(nil)[:8])
		for _, s := range []struct {
			name string
			mod  int
		}{{"high-value", 7}, {"churn-risk", 5}, {"weekend-shoppers", 2}} {
			if i%s.mod == 0 {
				_ = cw.Write([]string{pseudonym, s.name})
			}
		}
	}
	cw.Flush()
	return b.String()
}

// readExport parses the CSV into pseudonyms by segment, rejecting a row
// that is not a pseudonym with an error naming the line.
func readExport(r io.Reader) (map[string][]anonymize.Pseudonym, error) {
	rows, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	out := map[string][]anonymize.Pseudonym{}
	for i, row := range rows[1:] {
		if len(row) != 2 {
			return nil, fmt.Errorf("line %d: want pseudonym,segment", i+2)
		}
		p, err := anonymize.ParsePseudonym(row[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+2, err)
		}
		out[row[1]] = append(out[row[1]], p)
	}
	return out, nil
}
