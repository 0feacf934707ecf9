package audit

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// TestStoreProblem: a damaged chain or state is LEDGER_INVALID; a store that
// never settled while its state was compared is a CONFLICT that says nothing
// was verified; any other failure (the store unreadable) is passed on as it is.
func TestStoreProblem(t *testing.T) {
	unreadable := errors.New("postgres: scan: connection refused")
	cases := []struct {
		err  error
		code problem.Code // "" : passed on unchanged
	}{
		{&ledger.ChainError{Seq: 4, Err: errors.New("prev_hash does not match")}, problem.LedgerInvalid},
		{&ledger.StateMismatchError{Key: "note/1", Problem: "differs"}, problem.LedgerInvalid},
		{fmt.Errorf("walk: %w", ledger.ErrUnsettled), problem.Conflict},
		{unreadable, ""},
	}
	for _, c := range cases {
		got := storeProblem(c.err)
		var p *problem.Error
		switch {
		case c.code == "":
			if got != c.err {
				t.Errorf("%v: got %v, want it passed on unchanged", c.err, got)
			}
		case !errors.As(got, &p) || p.Code != c.code:
			t.Errorf("%v: got %v, want %s", c.err, got, c.code)
		}
	}
	got := storeProblem(ledger.ErrUnsettled)
	if !errors.Is(got, ledger.ErrUnsettled) {
		t.Errorf("%v: ErrUnsettled is lost", got)
	}
	if p := problem.As(got); p.Fix == "" || !strings.Contains(p.Message, "not verified") {
		t.Errorf("%+v: want a message that says the state is not verified, and a fix", p)
	}
}
