package problem

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"testing"
)

// secretCause is an error whose text must never reach a user or a client.
type secretCause struct{ token string }

func (c *secretCause) Error() string { return "driver said: password=" + c.token }

func TestWrapReachesTheCause(t *testing.T) {
	cause := &secretCause{token: "hunter2"}
	err := fmt.Errorf("handler: %w", Wrap(cause, Unreachable, "check the network", "cannot reach %s", "the broker"))

	var p *Error
	if !errors.As(err, &p) || p.Code != Unreachable || p.Message != "cannot reach the broker" || p.Fix != "check the network" {
		t.Fatalf("errors.As: %#v", p)
	}
	var c *secretCause
	if !errors.As(err, &c) || c != cause {
		t.Fatalf("errors.As does not reach the cause through the problem: %v", c)
	}
	if !errors.Is(err, cause) || errors.Unwrap(p) != cause {
		t.Fatal("errors.Is does not reach the cause through the problem")
	}
	if errors.Is(Wrap(fs.ErrExist, BadRequest, "", "x"), fs.ErrNotExist) {
		t.Fatal("errors.Is matched a cause that is not there")
	}
	if New(BadRequest, "m", "f").Unwrap() != nil || Newf(BadRequest, "f", "m %d", 1).Unwrap() != nil {
		t.Fatal("New and Newf have no cause")
	}
}

// A sentinel wrapped by Wrap is found; one only formatted into the message is not.
func TestOnlyWrapCarriesTheCause(t *testing.T) {
	if !errors.Is(Wrap(fs.ErrNotExist, BadRequest, "pass a file that exists", "cannot read x: %v", fs.ErrNotExist), fs.ErrNotExist) {
		t.Error("Wrap lost the cause")
	}
	if errors.Is(Newf(BadRequest, "pass a file that exists", "cannot read x: %v", fs.ErrNotExist), fs.ErrNotExist) {
		t.Error("Newf grew a cause")
	}
}

// The cause is for errors.Is/As and the server log only: it is never in Error(), the
// JSON body a client gets, or the INTERNAL answer that hides a non-problem error.
func TestCauseNeverShown(t *testing.T) {
	cause := &secretCause{token: "hunter2"}
	for _, p := range []*Error{
		Wrap(cause, Unreachable, "check the network", "cannot reach the broker"),
		As(cause),
		As(fmt.Errorf("store: %w", cause)),
	} {
		b, err := json.Marshal(map[string]*Error{"error": p})
		if err != nil {
			t.Fatal(err)
		}
		for what, s := range map[string]string{"Error()": p.Error(), "JSON": string(b), "%v": fmt.Sprintf("%v", p), "%+v": fmt.Sprintf("%+v", p), "Message/Fix": p.Message + p.Fix} {
			if strings.Contains(s, "hunter2") || strings.Contains(s, "password") {
				t.Errorf("%s shows the cause: %s", what, s)
			}
		}
		if !errors.Is(p, cause) {
			t.Errorf("%s: cause lost", p.Code)
		}
	}
	if p := As(cause); p.Code != Internal || p.Status() != http.StatusInternalServerError {
		t.Errorf("As(non-problem) = %v", p)
	}
}

// The wire shape is pinned: a typed code and a cause change nothing a client sees.
func TestJSONShape(t *testing.T) {
	for _, c := range []struct {
		p    *Error
		want string
	}{
		{New(NotFound, "no such service", "run agentkeys list"), `{"error":{"code":"NOT_FOUND","message":"no such service","fix":"run agentkeys list"}}`},
		{New(Conflict, "already there", ""), `{"error":{"code":"CONFLICT","message":"already there"}}`},
		{Wrap(errors.New("secret detail"), Internal, "retry", "failed"), `{"error":{"code":"INTERNAL","message":"failed","fix":"retry"}}`},
		{&Error{Code: RateLimited, Message: "slow down", Fix: "wait", RetryAfter: 3}, `{"error":{"code":"RATE_LIMITED","message":"slow down","fix":"wait","retry_after":3}}`},
		{&Error{Code: ApprovalNeeded, Message: "waiting", Fix: "ask", Approval: &Approval{ID: "a1", Expires: 99}}, `{"error":{"code":"APPROVAL_REQUIRED","message":"waiting","fix":"ask","approval":{"id":"a1","expires":99}}}`},
	} {
		b, err := json.Marshal(map[string]*Error{"error": c.p})
		if err != nil || string(b) != c.want {
			t.Errorf("got %s (%v), want %s", b, err, c.want)
		}
		var back struct{ Error *Error }
		if err := json.Unmarshal(b, &back); err != nil || back.Error.Code != c.p.Code || back.Error.Message != c.p.Message {
			t.Errorf("round trip of %s: %+v %v", b, back.Error, err)
		}
	}
}

func TestCodeMapping(t *testing.T) {
	for _, c := range []struct {
		code         Code
		status, exit int
	}{
		{BadRequest, 400, ExitUsage}, {TooLarge, 413, ExitUsage},
		{Unauthenticated, 401, ExitDenied}, {Revoked, 401, ExitDenied},
		{Denied, 403, ExitDenied}, {ApprovalNeeded, 403, ExitDenied},
		{NotFound, 404, ExitNotFound}, {Conflict, 409, ExitError},
		{RateLimited, 429, ExitError}, {NotReady, 503, ExitUnreachable},
		{Unreachable, 503, ExitUnreachable}, {LedgerInvalid, 500, ExitError},
		{Internal, 500, ExitError}, {Code("SOMETHING_NEW"), 500, ExitError},
	} {
		p := Wrap(errors.New("cause"), c.code, "", "m")
		if p.Status() != c.status || p.ExitCode() != c.exit || p.Error() != string(c.code)+": m" {
			t.Errorf("%s: status %d exit %d %q; want %d %d", c.code, p.Status(), p.ExitCode(), p.Error(), c.status, c.exit)
		}
	}
}
