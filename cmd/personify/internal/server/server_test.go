package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"github.com/personify-go/personify/anonymize"
	pb "github.com/personify-go/personify/cmd/personify/gen/personify/v1"
	"github.com/personify-go/personify/personify"
)

func TestTokensRolesAndFiles(t *testing.T) {
	var ts Tokens
	require.NoError(t, ts.Add("lookup-token-0123456789", RoleLookup))
	require.NoError(t, ts.Add("both-token-0123456789ab", RoleLookup))
	require.NoError(t, ts.Add("both-token-0123456789ab", RolePrivacy))
	assert.Equal(t, RoleLookup, ts.rolesOf("lookup-token-0123456789"))
	assert.Equal(t, RoleLookup|RolePrivacy, ts.rolesOf("both-token-0123456789ab"))
	assert.Zero(t, ts.rolesOf(""))
	assert.Zero(t, ts.rolesOf("lookup-token-012345678"), "a prefix is not the token")
	assert.Zero(t, ts.rolesOf("lookup-token-01234567890"))
	assert.ErrorIs(t, ts.Add("short", RoleAdmin), ErrBadTokens)
	assert.ErrorIs(t, ts.Add("with a space in it 0123", RoleAdmin), ErrBadTokens)
	assert.Equal(t, "lookup+privacy", (RoleLookup | RolePrivacy).String())

	dir := t.TempDir()
	f := filepath.Join(dir, "tokens")
	require.NoError(t, os.WriteFile(f, []byte("# comment\n\nadmin admin-token-0123456789\nlookup lookup-token-0123456789\n"), 0o600))
	var ft Tokens
	require.NoError(t, ft.LoadTokenFile(f))
	assert.Equal(t, RoleAdmin, ft.rolesOf("admin-token-0123456789"))
	require.NoError(t, os.Chmod(f, 0o644))
	err := (&Tokens{}).LoadTokenFile(f)
	assert.ErrorIs(t, err, ErrBadTokens, "a token file others can read is refused")
	require.NoError(t, os.WriteFile(f, []byte("root admin-token-0123456789\n"), 0o600))
	err = (&Tokens{}).LoadTokenFile(f)
	assert.ErrorIs(t, err, ErrBadTokens)
	assert.NotContains(t, err.Error(), "admin-token", "the error never holds a token")
	require.NoError(t, os.WriteFile(f, []byte("admin tooshort\n"), 0o600))
	err = (&Tokens{}).LoadTokenFile(f)
	assert.ErrorIs(t, err, ErrBadTokens)
	assert.NotContains(t, err.Error(), "tooshort")

	var et Tokens
	env := map[string]string{"PERSONIFY_LOOKUP_TOKEN": "lookup-token-0123456789, next-lookup-token-0123", "PERSONIFY_ADMIN_TOKEN": ""}
	require.NoError(t, et.LoadEnv(func(k string) string { return env[k] }))
	assert.Equal(t, 2, et.Len())
	assert.Equal(t, RoleLookup, et.rolesOf("next-lookup-token-0123"))
}

func TestCodecsRefuseUnknownFieldsAndQuoteNothing(t *testing.T) {
	var j jsonCodec
	var m pb.SegmentsRequest
	require.NoError(t, j.Unmarshal([]byte(`{"subject":{"pseudonym":"0123456789abcdef"},"purpose":"p"}`), &m))
	assert.Equal(t, "p", m.GetPurpose())
	for _, bad := range []string{
		`{"alice@example.com":1}`,
		`{"subject":{"identifier":{"kind":"alice@example.com"}}}`,
		`{"subject":{"identifier":{"value":{"alice@example.com":1}}}}`,
		`{"purpose":"alice@example.com"`,
		`{"subject":{"pseudonym":"a","identifier":{"value":"alice@example.com"}}}`,
		`alice@example.com`,
		`{"purpose":"\xffalice@example.com"}`,
	} {
		err := j.Unmarshal([]byte(bad), &pb.SegmentsRequest{})
		require.Error(t, err, bad)
		assert.ErrorIs(t, err, errMalformed)
		assert.NotContains(t, err.Error(), "alice", bad)
	}
	var p protoCodec
	good, err := proto.Marshal(&pb.InRequest{Segment: "s"})
	require.NoError(t, err)
	require.NoError(t, p.Unmarshal(good, &pb.InRequest{}))
	withUnknown := append(append([]byte{}, good...), 0x9a, 0x06, 0x05, 'a', 'l', 'i', 'c', 'e') // field 99, bytes
	err = p.Unmarshal(withUnknown, &pb.InRequest{})
	assert.ErrorContains(t, err, "unknown field")
	nested, err := proto.Marshal(&pb.BatchInRequest{Subjects: []*pb.Subject{{Who: &pb.Subject_Pseudonym{Pseudonym: "x"}}}})
	require.NoError(t, err)
	// An unknown field inside a repeated nested message.
	var in pb.BatchInRequest
	require.NoError(t, proto.Unmarshal(nested, &in))
	in.Subjects[0].ProtoReflect().SetUnknown([]byte{0x9a, 0x06, 0x01, 'x'})
	b, err := proto.Marshal(&in)
	require.NoError(t, err)
	err = p.Unmarshal(b, &pb.BatchInRequest{})
	assert.ErrorContains(t, err, "unknown field in personify.v1.Subject")
}

func TestDecodeReceipt(t *testing.T) {
	key, err := anonymize.KeyFromHex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	require.NoError(t, err)
	e, err := personify.New(personify.Options{Key: key, Now: func() time.Time { return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) }})
	require.NoError(t, err)
	defer e.Close()
	rc, err := e.Forget(anonymize.Email("ana@example.com"))
	require.NoError(t, err)
	b, err := json.Marshal(rc)
	require.NoError(t, err)
	got, err := decodeReceipt(b)
	require.NoError(t, err)
	require.NoError(t, e.VerifyReceipt(got))
	for bad, says := range map[string]string{
		"":                          "empty",
		string(b[:len(b)/2]):        "ends early",
		`{"version":3,"x":1}`:       "wrong shape",
		string(b) + `{}`:            "after its JSON",
		`{"version":"three"}`:       "wrong shape",
		strings.Repeat(" ", 300000): "more than",
	} {
		_, err := decodeReceipt([]byte(bad))
		assert.ErrorContains(t, err, says, "%.40q", bad)
	}
}

func FuzzDecodeReceipt(f *testing.F) {
	f.Add([]byte(`{"version":3,"id":"x","pseudonyms":[],"segments":[]}`))
	f.Add([]byte(`{"version":`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeReceipt(b)
	})
}

// The codecs never panic and never quote what they refuse.
func FuzzCodecs(f *testing.F) {
	f.Add([]byte(`{"subjects":[{"pseudonym":"0123456789abcdef"}],"purpose":"p"}`))
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := (jsonCodec{}).Unmarshal(b, &pb.BatchSegmentsRequest{}); err != nil && len(b) > 12 && strings.Contains(err.Error(), string(b)) {
			t.Fatalf("the JSON error quotes the body: %v", err)
		}
		_ = (protoCodec{}).Unmarshal(b, &pb.BatchSegmentsRequest{})
	})
}
