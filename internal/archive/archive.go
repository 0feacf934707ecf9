// Package archive is ledger retention (§3.3): the chain's older entries, exported
// to an object store (a directory, or an S3 bucket and prefix) as segments that
// anyone holding the enclave's ledger public key can verify offline, so that a
// broker's store may drop them (ledger.Pruner) and read them back from here on
// request.
//
// A segment is one object, "ledger-<first>-<last>.json" (20-digit seqs, so keys
// sort in chain order), holding the entries first..last exactly as stored (every
// payload, no redaction) and a manifest: the ledger id (genesis hash), first and
// last seq, the hash of entry first-1 (the previous segment's last: the link
// between segments) and the hash of its last entry. The last entry of every
// segment is a checkpoint the enclave signed: it vouches for everything before
// it through the hash links, so one segment alone is checked with the ledger key
// (Segment.Check), and the whole archive from genesis by re-folding it (Walk).
// Segments are written once (put-if-absent) and never changed.
package archive

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/agentkeys/agentkeys/internal/blobstore"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Format names the segment layout; a reader refuses any other.
const Format = "agentkeys-ledger-segment/1"

// Segment is one archived run of the chain.
type Segment struct {
	Format   string         `json:"format"`
	LedgerID ledger.Hash    `json:"ledger_id"` // hash of genesis: which chain
	First    uint64         `json:"first"`
	Last     uint64         `json:"last"`
	Prev     ledger.Hash    `json:"prev_hash"` // hash of entry First-1 (zero for the first segment)
	LastHash ledger.Hash    `json:"last_hash"` // hash of entry Last, the closing checkpoint
	Entries  []ledger.Entry `json:"entries"`
}

// ErrInvalid is wrapped by every failed check of an archive's content.
var ErrInvalid = errors.New("archive: invalid")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Check verifies s on its own with the enclave's ledger public key (hex): the
// entries are first..last, each linked to the one before (the first to Prev),
// every payload present and canonical, and the last is a checkpoint the ledger
// key signed that vouches for the entry before it. A first segment starts with
// the genesis that names ledgerKey and whose hash is LedgerID. So every entry's
// content is what the enclave checkpointed (hashes cover content, not
// signatures); each entry's own signature is checked by Walk, which needs the
// account keys folded from the entries before it.
func (s *Segment) Check(ledgerKey string) error {
	name := fmt.Sprintf("segment %d-%d", s.First, s.Last)
	if s.Format != Format {
		return invalidf("%s: format %q, want %q", name, s.Format, Format)
	}
	n := len(s.Entries)
	if n < 2 || s.Last < s.First || s.Last-s.First+1 != uint64(n) {
		return invalidf("%s holds %d entries", name, n)
	}
	prev := s.Prev
	for i := range s.Entries {
		e := &s.Entries[i]
		if e.Seq != s.First+uint64(i) {
			return invalidf("%s: entry %d is out of order (seq %d)", name, s.First+uint64(i), e.Seq)
		}
		if e.PrevHash != prev {
			return invalidf("%s: seq %d does not link to the entry before it", name, e.Seq)
		}
		if e.Redacted() {
			return invalidf("%s: seq %d has no payload", name, e.Seq)
		}
		if err := e.CheckForm(); err != nil {
			return invalidf("%s: seq %d: %v", name, e.Seq, err)
		}
		prev = e.Hash()
	}
	if prev != s.LastHash {
		return invalidf("%s: its last entry's hash is not the manifest's", name)
	}
	last := &s.Entries[n-1]
	pub, err := hex.DecodeString(ledgerKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return errors.New("archive: the ledger key is not a hex Ed25519 public key")
	}
	if last.Kind != ledger.KindCheckpoint || last.Origin != ledger.OriginEnclave || last.Signer != ledgerKey || !ed25519.Verify(pub, prev[:], last.Sig) {
		return invalidf("%s: its last entry is not a checkpoint signed by the ledger key %s…", name, ledgerKey[:16])
	}
	var c ledger.Checkpoint
	if err := ledger.DecodeStrict(last.Payload, &c); err != nil || c.Seq+1 != last.Seq || c.Hash != last.PrevHash {
		return invalidf("%s: its closing checkpoint does not vouch for the entry before it", name)
	}
	if s.First == 0 {
		g := &s.Entries[0]
		var gp ledger.Genesis
		if g.Kind != ledger.KindGenesis || json.Unmarshal(g.Payload, &gp) != nil || gp.LedgerKey != ledgerKey {
			return invalidf("%s: it does not start with the genesis of ledger key %s…", name, ledgerKey[:16])
		}
		if g.Hash() != s.LedgerID || s.Prev != (ledger.Hash{}) {
			return invalidf("%s: its manifest does not name its genesis", name)
		}
	}
	return nil
}

// Ref names a stored segment.
type Ref struct {
	Key         string
	First, Last uint64
}

// Archive is a set of segments under a prefix of an object store.
type Archive struct {
	store  blobstore.Store
	prefix string // "" or ending in "/"
	where  string // for messages: the directory or s3:// URL
}

// New returns the archive in store under prefix ("" or a key prefix; a
// trailing "/" is added). where names it in messages.
func New(store blobstore.Store, prefix, where string) (*Archive, error) {
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		if err := blobstore.CheckKey(prefix); err != nil {
			return nil, fmt.Errorf("archive prefix %q: %w", prefix, err)
		}
		prefix += "/"
	}
	return &Archive{store: store, prefix: prefix, where: where}, nil
}

// String is where the archive is, as the operator named it.
func (a *Archive) String() string { return a.where }

const keyStem = "ledger-"

func (a *Archive) key(first, last uint64) string {
	return fmt.Sprintf("%s%s%020d-%020d.json", a.prefix, keyStem, first, last)
}

// parseKey reads a segment key; ok is false for any other object.
func (a *Archive) parseKey(key string) (Ref, bool) {
	rest, ok := strings.CutPrefix(key, a.prefix+keyStem)
	if !ok {
		return Ref{}, false
	}
	rest, ok = strings.CutSuffix(rest, ".json")
	f, l, ok2 := strings.Cut(rest, "-")
	if !ok || !ok2 || len(f) != 20 || len(l) != 20 {
		return Ref{}, false
	}
	first, err1 := strconv.ParseUint(f, 10, 64)
	last, err2 := strconv.ParseUint(l, 10, 64)
	if err1 != nil || err2 != nil {
		return Ref{}, false
	}
	return Ref{Key: key, First: first, Last: last}, true
}

// List returns the archive's segments in chain order. They must follow each
// other from genesis without a gap or an overlap.
func (a *Archive) List(ctx context.Context) ([]Ref, error) {
	var refs []Ref
	for after := ""; ; {
		objs, more, err := a.store.List(ctx, a.prefix+keyStem, after, 0)
		if err != nil {
			return nil, fmt.Errorf("listing the archive %s: %w", a.where, err)
		}
		for _, o := range objs {
			if r, ok := a.parseKey(o.Key); ok {
				refs = append(refs, r)
			}
		}
		if !more || len(objs) == 0 {
			break
		}
		after = objs[len(objs)-1].Key
	}
	next := uint64(0)
	for _, r := range refs {
		if r.First != next || r.Last < r.First {
			return nil, invalidf("%s: segment %d-%d does not follow the one before it (expected it to start at seq %d)", a.where, r.First, r.Last, next)
		}
		next = r.Last + 1
	}
	return refs, nil
}

// Get reads and decodes the segment r names, and checks that its manifest is
// the one its key names. It does not verify it (Segment.Check).
func (a *Archive) Get(ctx context.Context, r Ref) (*Segment, error) {
	b, err := a.store.Get(ctx, r.Key)
	if err != nil {
		return nil, fmt.Errorf("reading %s from the archive %s: %w", r.Key, a.where, err)
	}
	var s Segment
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, invalidf("%s: %v", r.Key, err)
	}
	if s.First != r.First || s.Last != r.Last {
		return nil, invalidf("%s: its manifest names segment %d-%d", r.Key, s.First, s.Last)
	}
	return &s, nil
}

// put stores s (encoded deterministically) unless a segment is already under
// its key; one that is must be byte for byte the same.
func (a *Archive) put(ctx context.Context, s *Segment) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	key := a.key(s.First, s.Last)
	err = a.store.PutIfAbsent(ctx, key, b)
	if errors.Is(err, blobstore.ErrExists) {
		old, gerr := a.store.Get(ctx, key)
		if gerr != nil {
			return gerr
		}
		if !bytes.Equal(old, b) {
			return invalidf("%s already holds a different %s", a.where, key)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing %s to the archive %s: %w", key, a.where, err)
	}
	return nil
}

// Walk reads every segment in chain order, checks each (Segment.Check) and
// hands its entries to v, which must be a fresh verifier from genesis
// (ledger.NewVerifier re-folds every entry). After each segment it calls
// visit, if set, with the segment and where the chain stands after it.
func (a *Archive) Walk(ctx context.Context, ledgerKey string, v *ledger.Verifier, visit func(*Segment, ledger.Position) error) ([]Ref, error) {
	refs, err := a.List(ctx)
	if err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("%w: %s holds no segment", ErrInvalid, a.where)
	}
	var ledgerID ledger.Hash
	for i, r := range refs {
		s, err := a.Get(ctx, r)
		if err != nil {
			return nil, err
		}
		if err := s.Check(ledgerKey); err != nil {
			return nil, err
		}
		if i == 0 {
			ledgerID = s.LedgerID
		} else if s.LedgerID != ledgerID {
			return nil, invalidf("segment %d-%d belongs to another ledger", s.First, s.Last)
		}
		for j := range s.Entries {
			if err := v.Check(&s.Entries[j]); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
			}
		}
		if visit != nil {
			if err := visit(s, v.Position()); err != nil {
				return nil, err
			}
		}
	}
	return refs, nil
}
