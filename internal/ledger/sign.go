package ledger

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
)

// signerFor names who signs an enclave or account entry; it is part of the hash.
func (l *Ledger) signerFor(st State, origin string) (string, error) {
	if origin == OriginEnclave {
		return l.signer.LedgerKey(), nil
	}
	omni, ok := AccountOf(origin)
	if !ok {
		return "", fmt.Errorf("%w: %s entries must arrive signed", ErrOrigin, origin)
	}
	if l.schema.Wallet == nil {
		return "", fmt.Errorf("%w: no accounts in this ledger", ErrOrigin)
	}
	addr, err := l.schema.Wallet(st, omni)
	if err != nil {
		return "", fmt.Errorf("%w: account %s: %v", ErrOrigin, omni, err)
	}
	return addr, nil
}

// sign signs the entries that the enclave signs: the preparer signs the first
// while the pool signs the others. Pre-signed entries already carry their
// signatures.
func (l *Ledger) sign(entries []Entry, hashes []Hash) error {
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	first := -1
	for i := range entries {
		switch {
		case entries[i].Sig != nil: // pre-signed (governance)
		case first < 0:
			first = i
		case l.signq == nil: // genesis, written before the pool starts
			errs[i] = l.signOne(&entries[i], hashes[i])
		default:
			wg.Add(1)
			l.signq <- signJob{e: &entries[i], h: hashes[i], err: &errs[i], wg: &wg}
		}
	}
	if first >= 0 {
		errs[first] = l.signOne(&entries[first], hashes[first])
	}
	wg.Wait()
	return errors.Join(errs...)
}

// signJob is one entry for the signing pool.
type signJob struct {
	e   *Entry
	h   Hash
	err *error
	wg  *sync.WaitGroup
}

// signers are the signing pool: GOMAXPROCS goroutines that live as long as the
// preparer (long-lived, so their stacks are grown once, not per batch).
func (l *Ledger) signers() {
	l.signq = make(chan signJob, 256)
	for range runtime.GOMAXPROCS(0) {
		go func() {
			for j := range l.signq {
				*j.err = l.signOne(j.e, j.h)
				j.wg.Done()
			}
		}()
	}
}

func (l *Ledger) signOne(e *Entry, h Hash) error {
	var err error
	if omni, ok := AccountOf(e.Origin); ok {
		e.Sig, err = l.signer.SignAccount(omni, h)
	} else {
		e.Sig, err = l.signer.SignLedger(h)
	}
	if err != nil {
		return fmt.Errorf("ledger: signing seq %d: %w", e.Seq, err)
	}
	return nil
}
