package broker

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/agentkeys/agentkeys/internal/atomicfile"
	"github.com/agentkeys/agentkeys/internal/auditindex"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// The start-up snapshot (§3.3) lets a restart skip what an earlier run of this
// broker already verified: it records where the chain stood (a
// ledger.Position) and the usage index as of that entry, signed by the
// enclave's ledger key. Start checks the signature and that the store still
// holds the entry it names, then verifies only the entries after it; a
// missing, unsigned or stale snapshot means a full walk, as before. The folded
// state needs no snapshot: it is durable in the store, written in the same
// transaction as the entries.

// snapshotFile is the snapshot's name in the data dir.
const snapshotFile = "start.snapshot"

// snapshotDomain prefixes what the ledger key signs for a snapshot; entries are
// signed as their 32-byte hash, so the two can never be confused.
const snapshotDomain = "agentkeys/start-snapshot/v1\n"

// snapshotMagic starts the file, before the signature's hex and a newline.
const snapshotMagic = "agentkeys start snapshot v1 "

// SnapshotPath is where the broker keeps its start-up snapshot.
func SnapshotPath(dataDir string) string { return filepath.Join(dataDir, snapshotFile) }

type snapshot struct {
	Pos   ledger.Position     `json:"position"`
	Usage auditindex.Snapshot `json:"usage"`
}

func snapshotMessage(body []byte) []byte {
	sum := sha256.Sum256(body)
	return append([]byte(snapshotDomain), sum[:]...)
}

// encodeSnapshot is the file's content: the magic, the signature, the body.
func (b *Broker) encodeSnapshot(s snapshot) ([]byte, error) {
	body, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	sig, err := b.enc.SignEd25519("ledger/v1", snapshotMessage(body))
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(snapshotMagic)+2*len(sig)+1+len(body))
	out = append(out, snapshotMagic...)
	out = hex.AppendEncode(out, sig)
	out = append(out, '\n')
	return append(out, body...), nil
}

// decodeSnapshot checks the file's signature with the ledger key and decodes it.
func decodeSnapshot(data []byte, ledgerKey string) (snapshot, error) {
	var s snapshot
	rest, ok := bytes.CutPrefix(data, []byte(snapshotMagic))
	if !ok {
		return s, errors.New("not a start-up snapshot")
	}
	sigHex, body, ok := bytes.Cut(rest, []byte{'\n'})
	if !ok {
		return s, errors.New("truncated")
	}
	sig := make([]byte, hex.DecodedLen(len(sigHex)))
	if _, err := hex.Decode(sig, sigHex); err != nil {
		return s, errors.New("malformed signature")
	}
	pub, err := hex.DecodeString(ledgerKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return s, errors.New("bad ledger key")
	}
	if !ed25519.Verify(pub, snapshotMessage(body), sig) {
		return s, errors.New("not signed by this enclave's ledger key")
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return s, fmt.Errorf("decoding: %v", err)
	}
	if s.Pos.Next == 0 || s.Usage.Next != s.Pos.Next {
		return s, errors.New("inconsistent")
	}
	return s, nil
}

// loadSnapshot returns the data dir's snapshot; nil, with why, if there is
// none this broker can use.
func (b *Broker) loadSnapshot() (*snapshot, string) {
	data, err := os.ReadFile(SnapshotPath(b.cfg.DataDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, "no start-up snapshot"
	} else if err != nil {
		return nil, err.Error()
	}
	s, err := decodeSnapshot(data, signer{b.enc}.LedgerKey())
	if err != nil {
		return nil, "start-up snapshot ignored: " + err.Error()
	}
	return &s, ""
}

// position tracks where the chain stands after the last entry the broker's
// indexes observed (OnCommit runs in one goroutine; the lock is for Close).
type position struct {
	mu  sync.Mutex
	pos ledger.Position
	ok  bool // pos is valid: set by the start-up walk, advanced by every commit
}

func (p *position) set(pos ledger.Position) {
	p.mu.Lock()
	p.pos, p.ok = pos, true
	p.mu.Unlock()
}

func (p *position) advance(es []ledger.Entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ok && len(es) > 0 && es[0].Seq == p.pos.Next {
		p.ok = p.pos.Advance(es) == nil
	} else {
		p.ok = false // never a snapshot from a position that skipped entries
	}
}

func (p *position) get() (ledger.Position, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos, p.ok
}

// captureSnapshot is the chain's position and the usage index as of the last
// entry both observed; ok is false if they disagree (never written then).
// OnCommit calls it in the committer, where they cannot move under it.
func (b *Broker) captureSnapshot() (snapshot, bool) {
	pos, ok := b.pos.get()
	if !ok || pos.Next == 0 {
		return snapshot{}, false
	}
	u := b.usage.Snapshot()
	return snapshot{Pos: pos, Usage: u}, u.Next == pos.Next
}

// writeSnapshot signs s and writes it to the data dir. Failing to write one
// only costs the next start a longer walk: it is logged, never fatal.
func (b *Broker) writeSnapshot(s snapshot) {
	b.snaps.mu.Lock() // one writer at a time
	defer b.snaps.mu.Unlock()
	data, err := b.encodeSnapshot(s)
	if err == nil {
		err = atomicfile.WriteFile(SnapshotPath(b.cfg.DataDir), data, 0o600)
	}
	if err != nil {
		b.log.Warn("writing the start-up snapshot failed; the next start verifies more of the ledger", "err", err)
	}
}

// snapshotEvery is how many committed entries pass between the snapshots a
// running broker writes, so that a broker that is killed, not stopped, still
// starts with at most about this many entries to verify.
const snapshotEvery = 100_000

// snapshots counts commits between snapshots and tracks background writes.
type snapshots struct {
	since int        // entries committed since the last capture (committer goroutine only)
	mu    sync.Mutex // held while a snapshot is written
	wg    sync.WaitGroup
}

// committed counts n committed entries; past snapshotEvery it captures a
// snapshot (in the committer, consistent) and writes it in the background.
func (b *Broker) snapshotCommitted(n int) {
	if b.snaps.since += n; b.snaps.since < snapshotEvery {
		return
	}
	b.snaps.since = 0
	if s, ok := b.captureSnapshot(); ok {
		b.snaps.background(func() { b.writeSnapshot(s) })
	}
}

func (s *snapshots) background(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// wait returns once no snapshot is being written.
func (s *snapshots) wait() { s.wg.Wait() }
