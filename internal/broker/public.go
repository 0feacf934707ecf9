package broker

import (
	"context"

	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// Attest is the enclave's quote over nonce (GET /v1/attestation; nil for the
// quote GET /v1/enclave publishes).
func (b *Broker) Attest(nonce []byte) attest.Quote { return b.enc.Attest(nonce) }

// EnclaveKeys are the enclave's published public keys.
func (b *Broker) EnclaveKeys() []attest.KeyInfo { return b.enc.Keys() }

// Head is the stored chain's head; ok is false while the store is empty. It
// reads the store, so it answers before the broker is ready.
func (b *Broker) Head(ctx context.Context) (h ledger.Head, ok bool, err error) {
	return b.store.Head(ctx)
}

// Successors lists the enclave measurements governance has authorized to take
// over the seed (§10.1).
func (b *Broker) Successors(ctx context.Context) ([]string, error) {
	l, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	return registry.Successors(l.State(ctx))
}

// SeedCreated says whether this start created (and sealed) a new master seed.
func (b *Broker) SeedCreated() bool { return b.enc.Created() }

// Measurements are the enclave's identity: MRENCLAVE, MRSIGNER and tier.
func (b *Broker) Measurements() enclave.Measurements { return b.enc.Measurements() }
