//go:build unix

package personify

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/personify-go/personify/anonymize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const crashBatch = 5 // people per write: a write is visible whole or not at all

// crashPurgeWithin is long enough that many kills land between an erasure
// and its compaction.
const crashPurgeWithin = 300 * time.Millisecond

func crashID(round, writer, n, j int) anonymize.Identifier {
	return anonymize.UserID(fmt.Sprintf("crash-%d-%d-%d-%d", round, writer, n, j))
}

// TestCrashChild is the child of TestCrashRecovery: it writes until it is
// killed, printing each write it got an acknowledgement for.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("PERSONIFY_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestCrashRecovery")
	}
	var round int
	fmt.Sscan(os.Getenv("PERSONIFY_CRASH_ROUND"), &round)
	e, err := Open(dir, Options{Key: mustKey(t, testKeyHex), K: 3,
		Durable: DurableOptions{CompactAfter: 32 << 10, MaintenanceInterval: 5 * time.Millisecond, PurgeWithin: crashPurgeWithin}})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(3)
	}
	if round == 0 {
		if err := errors.Join(e.DefinePurpose(Purpose{Name: "ads", Model: OptOut}), e.Define(Segment{Name: "s", Purpose: "ads"})); err != nil {
			fmt.Println("write: define:", err) // the parent fails on it
			os.Exit(4)
		}
		fmt.Println("ready")
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 4 { // concurrent writers: group commit
		wg.Go(func() {
			for n := 0; ; n++ {
				ids := make([]anonymize.Identifier, crashBatch)
				for j := range ids {
					ids[j] = crashID(round, w, n, j)
				}
				var err error
				var receipt []byte
				if n%7 == 3 {
					var r Receipt
					r, err = e.Forget(crashID(round, w, n-1, 0)) // erase one of the previous batch
					receipt, _ = json.Marshal(r)
				}
				if err == nil {
					err = e.Add("s", ids...)
				}
				if err != nil {
					fmt.Println("write:", err)
					os.Exit(4)
				}
				mu.Lock()
				if receipt != nil {
					fmt.Fprintf(out, "receipt %s\n", receipt)
				}
				fmt.Fprintf(out, "ack %d %d\n", w, n)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func TestCrashRecovery(t *testing.T) {
	if os.Getenv("PERSONIFY_CRASH_DIR") != "" {
		t.Skip("in the child")
	}
	dir := t.TempDir()
	rounds := 50
	purgedAfterKill := 0
	r := rand.New(rand.NewPCG(7, 7))
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "PERSONIFY_CRASH_DIR="+dir, fmt.Sprintf("PERSONIFY_CRASH_ROUND=%d", round))
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		acked := map[[2]int]bool{}
		maxN := map[int]int{}
		var receipts []Receipt
		var lines []string
		done, ready := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines = append(lines, sc.Text())
				if sc.Text() == "ready" {
					close(ready)
				}
				var w, n int
				if _, err := fmt.Sscanf(sc.Text(), "ack %d %d", &w, &n); err == nil {
					acked[[2]int{w, n}] = true
					maxN[w] = max(maxN[w], n)
				}
				if js, ok := strings.CutPrefix(sc.Text(), "receipt "); ok {
					var r Receipt
					if json.Unmarshal([]byte(js), &r) == nil {
						receipts = append(receipts, r)
					}
				}
			}
		}()
		if round == 0 { // the definitions every round writes to are durable first, however slow the machine
			select {
			case <-ready:
			case <-done:
			case <-time.After(time.Minute):
				t.Fatal("the first child did not define its segment within a minute")
			}
		}
		time.Sleep(time.Duration(30+r.IntN(150)) * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		<-done
		_ = cmd.Wait()
		for _, l := range lines {
			require.False(t, strings.HasPrefix(l, "open:") || strings.HasPrefix(l, "write:"), "child failed: %s", l)
		}

		e, err := Open(dir, Options{Key: mustKey(t, testKeyHex), K: 3,
			Durable: DurableOptions{MaintenanceInterval: time.Hour, PurgeWithin: crashPurgeWithin}})
		require.NoError(t, err, "round %d", round)
		// Every erasure acknowledged before the kill is physically
		// complete by its receipt's deadline, although the process that
		// promised it is gone: the deadline is in the log.
		for _, rc := range receipts {
			require.NoError(t, e.VerifyReceipt(rc), "round %d", round)
			if wait := time.Until(rc.PurgeBy.Add(100 * time.Millisecond)); !e.Purged(rc) && wait > 0 {
				time.Sleep(wait)
			}
			require.True(t, e.Purged(rc), "round %d: receipt %s not purged by its PurgeBy (%s)", round, rc.ID, rc.PurgeBy)
			for _, kp := range rc.Pseudonyms {
				for _, b := range pseudonymBytes(kp.Pseudonym) {
					require.False(t, dirHolds(t, dir, b), "round %d: a file still holds an erased pseudonym", round)
				}
			}
		}
		if len(receipts) > 0 {
			purgedAfterKill += len(receipts)
		}
		for w := range 4 {
			for n := 0; n <= maxN[w]+2; n++ {
				// Write n+1 may have erased person 0 of this batch first
				// (whether or not it was acknowledged): check the others.
				from := 0
				if (n+1)%7 == 3 {
					from = 1
				}
				in := 0
				for j := from; j < crashBatch; j++ {
					p, err := e.Pseudonym(crashID(round, w, n, j))
					require.NoError(t, err)
					if e.In(p, "s") {
						in++
					}
				}
				if acked[[2]int{w, n}] {
					assert.Equal(t, crashBatch-from, in, "round %d: acknowledged write %d/%d lost", round, w, n)
				} else {
					assert.Contains(t, []int{0, crashBatch - from}, in, "round %d: write %d/%d half applied", round, w, n)
				}
			}
		}
		if round%10 == 0 {
			t.Logf("round %d: %d acknowledged writes; %d files; %d erasures checked after kills so far", round, len(acked), len(mustReadDir(t, dir)), purgedAfterKill)
		}
		require.NoError(t, e.Close())
		if t.Failed() {
			return
		}
	}
}

func mustReadDir(t *testing.T, dir string) []os.DirEntry {
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	return des
}
