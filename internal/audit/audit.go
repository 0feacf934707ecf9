// Package audit verifies a ledger end to end: from a running broker's public API
// (what any client can check) or from an operator's data dir (which also re-folds
// the state and compares it with what is stored). A KeyView follows a broker's
// chain to tell which OIDC keys the ledger vouches for (keys.go). It only reads.
package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/modules"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// Summary describes a verified ledger.
type Summary struct {
	Entries    uint64             `json:"entries"`
	HeadSeq    uint64             `json:"head_seq"`
	HeadHash   ledger.Hash        `json:"head_hash"`
	Checkpoint *ledger.Checkpoint `json:"checkpoint,omitempty"`
	StateKeys  int                `json:"state_keys,omitempty"` // re-folded and compared (data dir)
	Redacted   uint64             `json:"redacted,omitempty"`   // private entries checked by their commitment only (server)
	Opened     uint64             `json:"opened,omitempty"`     // private entries served in full (server: the owner's own)
	Platform   string             `json:"platform_key,omitempty"`
	Tier       string             `json:"tier,omitempty"`      // of the attested enclave (server): dev, or production (a signed release)
	MrEnclave  string             `json:"mrenclave,omitempty"` // (server) the quote's
	MrSigner   string             `json:"mrsigner,omitempty"`  // (server) the quote's
	Pinned     bool               `json:"platform_key_pinned"`
	// ArchivedBefore: entries below this seq (genesis aside) were read from an
	// archive (Segments segments), or, without one, are archived and were
	// checked only through the store's signed anchor (§3.3 retention).
	ArchivedBefore uint64 `json:"archived_before,omitempty"`
	Segments       int    `json:"archive_segments,omitempty"`
}

// Line is the one-line summary printed on success.
func (s Summary) Line() string {
	noun := "entries"
	if s.Entries == 1 {
		noun = "entry"
	}
	line := fmt.Sprintf("ledger valid: %d %s, head seq %d hash %s", s.Entries, noun, s.HeadSeq, s.HeadHash.String()[:16])
	if s.Checkpoint != nil {
		line += fmt.Sprintf(", last checkpoint at seq %d", s.Checkpoint.Seq)
	}
	if s.StateKeys > 0 {
		line += fmt.Sprintf(", state re-folded (%d keys match)", s.StateKeys)
	}
	if s.Redacted > 0 || s.Opened > 0 {
		line += fmt.Sprintf(", %d private entries checked by commitment, %d opened", s.Redacted, s.Opened)
	}
	switch {
	case s.Segments > 0:
		line += fmt.Sprintf("; %d archive segments hold the entries before seq %d", s.Segments, s.ArchivedBefore)
	case s.ArchivedBefore > 0:
		line += fmt.Sprintf("; entries 1-%d are archived and checked through the signed anchor only (pass --archive for the full chain)", s.ArchivedBefore-1)
	}
	if s.Tier != "" && len(s.MrSigner) >= 16 {
		line += fmt.Sprintf("; enclave tier %s, mrsigner %s…", s.Tier, s.MrSigner[:16])
	}
	return line
}

func invalid(err error) error {
	return problem.New(problem.LedgerInvalid, err.Error(),
		"the ledger was altered or is damaged from that seq on: restore it from a backup and compare; do not trust state derived after it")
}

// storeProblem says what a failed check of a store means: a chain or state that
// differs from what was signed is invalid; a store that brokers kept appending
// to while its state was compared is not known to be either.
func storeProblem(err error) error {
	var ce *ledger.ChainError
	var se *ledger.StateMismatchError
	switch {
	case errors.As(err, &ce) || errors.As(err, &se):
		return invalid(err)
	case errors.Is(err, ledger.ErrUnsettled):
		return problem.Wrap(err, problem.Conflict, "run the check again, at a quieter time or with the brokers stopped",
			"%v: nothing was found wrong, and the state is not verified", err)
	}
	return err
}

// Server is what VerifyServer reads: a *client.Client sees the chain as anyone
// does, a *client.Session also the owner's own private entries in full.
type Server interface {
	Enclave(ctx context.Context) (*apiv1.EnclaveInfo, error)
	Entries(ctx context.Context, from uint64, limit int) (*apiv1.EntriesPage, error)
}

// VerifyServer walks every entry the broker behind c serves, checking links,
// hashes, origins and signatures; entries of private kinds may come redacted to
// their payload commitment (§3.4), which the hash and signature cover. Public kinds
// (genesis, registries, checkpoints) are re-folded in memory. The enclave's quote
// must verify under pin, or (pin nil) under the platform key it names.
func VerifyServer(ctx context.Context, c Server, pin ed25519.PublicKey) (Summary, error) {
	info, err := c.Enclave(ctx)
	if err != nil {
		return Summary{}, err
	}
	sum := Summary{Platform: info.Quote.PlatformKey, Pinned: pin != nil}
	if pin == nil {
		if pin, err = hex.DecodeString(info.Quote.PlatformKey); err != nil {
			return sum, invalid(errors.New("the enclave quote names no valid platform key"))
		}
	}
	if err := attest.Verify(info.Quote, pin); err != nil {
		return sum, invalid(fmt.Errorf("enclave quote: %w", err))
	}
	rd := attest.ReportData(nil, info.Keys)
	if info.Quote.ReportData != hex.EncodeToString(rd[:]) {
		return sum, invalid(errors.New("enclave quote does not commit to the keys the broker lists"))
	}
	sum.Tier, sum.MrEnclave, sum.MrSigner = string(info.Quote.Tier), info.Quote.MrEnclave, info.Quote.MrSigner
	ledgerKey := ""
	for _, k := range info.Keys {
		if k.Path == "ledger/v1" {
			ledgerKey = k.Public
		}
	}
	mem := ledger.NewMemState()
	v := ledger.NewPublicVerifier(modules.Schema(), mem)
	for from := uint64(0); ; {
		page, err := c.Entries(ctx, from, 1000)
		if err != nil {
			return sum, err
		}
		for i := range page.Entries {
			e := &page.Entries[i]
			if err := v.Check(e); err != nil {
				return sum, invalid(err)
			}
			if e.Redacted() {
				sum.Redacted++
			}
			if e.Seq == 0 {
				if g, _ := ledger.LoadGenesis(mem); g == nil || g.LedgerKey != ledgerKey {
					return sum, invalid(&ledger.ChainError{Seq: 0, Err: errors.New("genesis ledger key is not the attested enclave's ledger/v1 key")})
				}
			}
		}
		if len(page.Entries) < 1000 {
			break
		}
		from = page.Next
	}
	sum.Opened = v.Opened
	return finish(sum, v, mem)
}

// VerifyStore verifies the ledger in an operator's store d (opened read-only:
// ledgerstore.Source.OpenReadOnly), re-folds all state and compares it with the
// stored state. It only reads; the caller closes d.
func VerifyStore(ctx context.Context, d ledger.Driver) (Summary, error) {
	if a, ok, err := ledger.StoredAnchor(ctx, d); err != nil {
		return Summary{}, invalid(err)
	} else if ok {
		return verifyPruned(ctx, d, a)
	}
	n, err := ledger.VerifyDriver(ctx, modules.Schema(), d, true)
	if err != nil {
		return Summary{Entries: n}, storeProblem(err)
	}
	sum := Summary{Entries: n}
	h, _, err := d.Head(ctx)
	if err != nil {
		return sum, err
	}
	sum.HeadSeq, sum.HeadHash = h.Seq, h.Hash
	view := ledger.View(ctx, d)
	if c, ok, _ := ledger.LastCheckpoint(view); ok {
		sum.Checkpoint = &c
	}
	view.Scan("", func(string, []byte) error { sum.StateKeys++; return nil })
	return sum, nil
}

func finish(sum Summary, v *ledger.Verifier, mem *ledger.MemState) (Summary, error) {
	if v.Count == 0 {
		return sum, invalid(errors.New("the ledger has no entries"))
	}
	next, h := v.Head()
	sum.Entries, sum.HeadSeq, sum.HeadHash = v.Count, next-1, h
	if c, ok, _ := ledger.LastCheckpoint(mem); ok {
		sum.Checkpoint = &c
	}
	return sum, nil
}

// verifyPruned verifies a store that dropped entries to an archive, without
// it: genesis, the signed anchor, and the chain after it (links and
// signatures, as at start-up). The state cannot be re-folded without the
// archive's entries.
func verifyPruned(ctx context.Context, d ledger.Driver, a ledger.Anchor) (Summary, error) {
	pos, n, err := ledger.VerifyFrom(ctx, modules.Schema(), d, nil)
	sum := Summary{Entries: n, ArchivedBefore: a.Pos.Next}
	if err != nil {
		var ce *ledger.ChainError
		if errors.As(err, &ce) {
			return sum, invalid(err)
		}
		return sum, err
	}
	sum.HeadSeq, sum.HeadHash = pos.Next-1, pos.Prev
	if c, ok, _ := ledger.LastCheckpoint(ledger.View(ctx, d)); ok {
		sum.Checkpoint = &c
	}
	return sum, nil
}
