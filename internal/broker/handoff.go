package broker

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// maxHandoffKey bounds the hex HPKE key of a handoff request (an ML-KEM-768 +
// X25519 public key is 1216 bytes).
const maxHandoffKey = 2 * 1216

// Handoff answers a successor's request for the seed (§10.3, POST
// /v1/enclave/handoff). The quote's mrsigner must be authorized on the
// successor registry (and not deauthorized since), with the platform key
// governance pinned for it; the enclave then checks the quote (signature under
// that key, tier production, freshness, commitment to the HPKE key) and seals
// the seed to the key. Every attempt whose quote is well formed is recorded
// (successor.handoff, granted or refused) before anything is sent: no seed
// leaves without its grant on the ledger.
func (b *Broker) Handoff(ctx context.Context, req apiv1.HandoffRequest) (*apiv1.HandoffResponse, error) {
	l, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	q := req.Quote
	if len(req.Key) > maxHandoffKey {
		return nil, problem.New(problem.BadRequest, "the handoff key is longer than an HPKE public key", "send the key agentkeys server --handoff-from made")
	}
	key, kerr := hex.DecodeString(req.Key)
	if kerr != nil || len(key) == 0 {
		return nil, problem.New(problem.BadRequest, "the handoff key is not hex", "send the key agentkeys server --handoff-from made")
	}
	rec := registry.Handoff{MrSigner: q.MrSigner, MrEnclave: q.MrEnclave, PlatformKey: q.PlatformKey, Tier: string(q.Tier)}
	if !lowerHex32(q.MrSigner) || !lowerHex32(q.MrEnclave) || !lowerHex32(q.PlatformKey) {
		return nil, problem.New(problem.BadRequest, "the quote's mrsigner, mrenclave and platform_key must be 64 hex characters",
			"send the quote agentkeys server --handoff-from made")
	}
	refuse := func(reason, fix string) (*apiv1.HandoffResponse, error) {
		rec.Reason = reason
		if _, err := l.Append(ctx, ledger.OriginEnclave, registry.KindSuccessorHandoff, rec); err != nil {
			return nil, fmt.Errorf("recording the refused handoff: %w", err)
		}
		b.log.Warn("refused a seed handoff", "mrsigner", q.MrSigner, "mrenclave", q.MrEnclave, "reason", reason)
		return nil, problem.New(problem.Denied, "seed handoff refused: "+reason+" (the attempt is on the ledger)", fix)
	}
	succ, ok, err := registry.AuthorizedSuccessor(l.State(ctx), q.MrSigner)
	if err != nil {
		return nil, err
	}
	authorize := fmt.Sprintf("governance must authorize it first: agentkeys governance authorize-successor %s --platform-key %s", q.MrSigner, q.PlatformKey)
	switch {
	case !ok:
		return refuse("mrsigner "+q.MrSigner+" is not an authorized successor (never authorized, or deauthorized)", authorize)
	case succ.PlatformKey == "":
		return refuse("mrsigner "+q.MrSigner+" was authorized without a platform key, so no quote can be verified for it", authorize)
	case succ.PlatformKey != q.PlatformKey:
		return refuse("the quote is signed by platform key "+q.PlatformKey+", not the one authorized for mrsigner "+q.MrSigner, authorize)
	}
	pub, _ := hex.DecodeString(succ.PlatformKey)
	sealed, err := b.enc.SealSeedTo(q, key, ed25519.PublicKey(pub))
	if errors.Is(err, enclave.ErrHandoffRefused) {
		return refuse(err.Error(), "start the successor again (a fresh quote), from the signed release governance authorized, with the platform key it authorized")
	}
	if err != nil {
		return nil, err
	}
	rec.Granted = true
	en, err := l.Append(ctx, ledger.OriginEnclave, registry.KindSuccessorHandoff, rec)
	if err != nil {
		return nil, fmt.Errorf("recording the handoff: %w", err)
	}
	b.log.Info("sent the seed to an authorized successor", "mrsigner", q.MrSigner, "mrenclave", q.MrEnclave, "seq", en.Seq)
	return &apiv1.HandoffResponse{Sealed: hex.EncodeToString(sealed), Seq: en.Seq}, nil
}

// lowerHex32 reports whether s is 32 bytes of lowercase hex.
func lowerHex32(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == 32 && s == hex.EncodeToString(b)
}
