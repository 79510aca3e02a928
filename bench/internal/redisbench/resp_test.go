package redisbench

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cannedConn returns a Conn that reads reply and discards what it writes,
// with a small read buffer, so over-long lines are testable.
func cannedConn(reply string) *Conn {
	return &Conn{
		r: bufio.NewReaderSize(strings.NewReader(reply), 64),
		w: bufio.NewWriter(io.Discard),
	}
}

func TestSIsMemberReplies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reply   string
		want    bool
		wantErr string // "" for success
		broken  bool   // the Conn must refuse further commands
	}{
		{"one", ":1\r\n", true, "", false},
		{"zero", ":0\r\n", false, "", false},
		{"error", "-WRONGTYPE Operation against a key\r\n", false, "redisbench: SISMEMBER: WRONGTYPE Operation against a key", false},
		{"empty-error", "-\r\n", false, "redisbench: SISMEMBER: ", false},
		{"two", ":2\r\n", false, "want 0 or 1", true},
		{"negative", ":-1\r\n", false, "want 0 or 1", true},
		{"simple-string", "+OK\r\n", false, "unexpected reply", true},
		{"bulk", "$1\r\n1\r\n", false, "unexpected reply", true},
		{"empty-integer", ":\r\n", false, "malformed integer", true},
		{"letters", ":1a\r\n", false, "malformed integer", true},
		{"overflow", ":99999999999999999999\r\n", false, "malformed integer", true},
		{"bare-lf", ":1\n", false, "malformed reply", true},
		{"too-short", "\r\n", false, "malformed reply", true},
		{"truncated", ":1\r", false, "unexpected EOF", true},
		{"eof", "", false, "unexpected EOF", true},
		{"long-line", ":" + strings.Repeat("1", 100) + "\r\n", false, "longer than", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cannedConn(tc.reply)
			got, err := c.SIsMember([]byte("k"), []byte("m"))
			if tc.wantErr == "" {
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
			if tc.broken {
				_, again := c.SIsMember([]byte("k"), []byte("m"))
				assert.Equal(t, err, again, "a broken Conn repeats its first error")
			} else {
				assert.NoError(t, c.err)
			}
		})
	}
}

func TestPipelinedReplies(t *testing.T) {
	keys, ms := members("k", 0, 4), members("m", 0, 4)
	t.Run("mixed", func(t *testing.T) {
		c := cannedConn(":1\r\n-ERR first\r\n:0\r\n-ERR second\r\n")
		out := make([]bool, 4)
		err := c.SIsMemberPipelined(keys, ms, out)
		require.ErrorContains(t, err, "ERR first")
		assert.Equal(t, []bool{true, false, false, false}, out)
		assert.NoError(t, c.err)
	})
	t.Run("malformed-stops", func(t *testing.T) {
		c := cannedConn(":1\r\n+OK\r\n:1\r\n:1\r\n")
		err := c.SIsMemberPipelined(keys, ms, make([]bool, 4))
		require.ErrorContains(t, err, "unexpected reply")
		assert.Equal(t, err, c.err)
	})
}

func TestUsedMemoryReplies(t *testing.T) {
	bulk := func(body string) string {
		return "$" + strconv.Itoa(len(body)) + "\r\n" + body + "\r\n"
	}
	info := "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n"
	for _, tc := range []struct {
		name    string
		reply   string
		want    int64
		wantErr string
	}{
		{"ok", bulk(info), 1 << 20, ""},
		{"last-line-no-crlf", bulk("used_memory_rss:5\nused_memory:42"), 42, ""},
		{"missing-field", bulk("# Memory\r\nused_memory_human:1.00M\r\n"), 0, "no used_memory field"},
		{"bad-number", bulk("used_memory:lots\r\n"), 0, "bad used_memory"},
		{"negative", bulk("used_memory:-3\r\n"), 0, "bad used_memory"},
		{"empty-body", bulk(""), 0, "no used_memory field"},
		{"nil", "$-1\r\n", 0, "nil reply"},
		{"negative-length", "$-2\r\n", 0, "malformed bulk length"},
		{"bad-length", "$x\r\n", 0, "malformed bulk length"},
		{"huge-length", "$1000000000000\r\n", 0, "over the"},
		{"short-body", "$10\r\nused\r\n", 0, "unexpected EOF"},
		{"no-crlf-after-body", "$2\r\nabcd", 0, "not followed by CRLF"},
		{"error", "-ERR unknown section\r\n", 0, "ERR unknown section"},
		{"integer", ":1\r\n", 0, "unexpected reply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cannedConn(tc.reply).UsedMemory()
			if tc.wantErr == "" {
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestSimpleReplies(t *testing.T) {
	require.NoError(t, cannedConn("+PONG\r\n").Ping())
	require.ErrorContains(t, cannedConn("+OK\r\n").Ping(), `reply "OK", want "PONG"`)
	require.NoError(t, cannedConn("+OK\r\n").FlushAll())
	require.ErrorContains(t, cannedConn("-ERR busy\r\n").FlushAll(), "redisbench: FLUSHALL: ERR busy")
	n, err := cannedConn(":7\r\n").DBSize()
	require.NoError(t, err)
	assert.Equal(t, int64(7), n)
	n2, err := cannedConn(":3\r\n").SAdd([]byte("k"), members("m", 0, 3))
	require.NoError(t, err)
	assert.Equal(t, 3, n2)
}

func TestWriteEncoding(t *testing.T) {
	var sent bytes.Buffer
	c := &Conn{r: bufio.NewReader(strings.NewReader(":1\r\n:1\r\n")), w: bufio.NewWriter(&sent)}
	_, err := c.SIsMember([]byte("seg"), []byte("a\r\nb"))
	require.NoError(t, err)
	assert.Equal(t, "*3\r\n$9\r\nSISMEMBER\r\n$3\r\nseg\r\n$4\r\na\r\nb\r\n", sent.String())

	sent.Reset()
	_, err = c.SAdd([]byte("seg"), [][]byte{[]byte("x"), []byte("")})
	require.NoError(t, err)
	assert.Equal(t, "*4\r\n$4\r\nSADD\r\n$3\r\nseg\r\n$1\r\nx\r\n$0\r\n\r\n", sent.String())
}

func TestParseInt(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"-0", 0, true},
		{"42", 42, true},
		{"-42", -42, true},
		{"9223372036854775807", math.MaxInt64, true},
		{"-9223372036854775808", math.MinInt64, true},
		{"9223372036854775808", 0, false},
		{"-9223372036854775809", 0, false},
		{"99999999999999999999", 0, false},
		{"", 0, false},
		{"-", 0, false},
		{"+1", 0, false},
		{"1 ", 0, false},
		{"0x10", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := parseInt([]byte(tc.in))
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}

// FuzzReplies feeds arbitrary server bytes to every reader: they must return
// values or errors, never panic, and a broken Conn must stay broken.
func FuzzReplies(f *testing.F) {
	for _, s := range []string{
		":1\r\n", ":0\r\n:1\r\n", "-ERR x\r\n", "+PONG\r\n", "+OK\r\n",
		"$14\r\nused_memory:10\r\n", "$-1\r\n", "$5\r\nab\r\n", ":-9223372036854775808\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := cannedConn(string(data))
		c.SIsMember([]byte("k"), []byte("m"))
		c.SIsMemberPipelined(members("k", 0, 3), members("m", 0, 3), make([]bool, 3))
		c.UsedMemory()
		c.DBSize()
		c.SAdd([]byte("k"), members("m", 0, 2))
		c.Ping()
		if err := c.FlushAll(); c.err != nil && err != c.err {
			t.Fatalf("broken Conn returned %v, not its sticky %v", err, c.err)
		}
	})
}
