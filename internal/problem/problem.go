// Package problem is AgentKeys' error vocabulary (§11): every failure a user can see
// has a stable code, a sentence saying what happened and one saying how to fix it.
// The code also decides the HTTP status and the CLI exit code. Messages must never
// contain a secret.
package problem

import (
	"errors"
	"fmt"
	"net/http"
)

// Stable codes.
const (
	BadRequest      = "BAD_REQUEST"
	TooLarge        = "TOO_LARGE"
	Unauthenticated = "UNAUTHENTICATED"
	Revoked         = "REVOKED"
	ApprovalNeeded  = "APPROVAL_REQUIRED"
	Denied          = "DENIED"
	NotFound        = "NOT_FOUND"
	Conflict        = "CONFLICT"
	RateLimited     = "RATE_LIMITED"
	NotReady        = "NOT_READY"
	Unreachable     = "UNREACHABLE"
	LedgerInvalid   = "LEDGER_INVALID"
	Internal        = "INTERNAL"
)

// Error is a user-facing failure.
type Error struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	Fix        string `json:"fix,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"` // seconds, for RATE_LIMITED
	// Approval is the open request an APPROVAL_REQUIRED answer waits for.
	Approval *Approval `json:"approval,omitempty"`
}

// Approval names the owner's approval request a read waits for.
type Approval struct {
	ID      string `json:"id"`
	Expires int64  `json:"expires"` // unix seconds: the request lapses then
}

// New returns an Error.
func New(code, message, fix string) *Error {
	return &Error{Code: code, Message: message, Fix: fix}
}

// Newf returns an Error with a formatted message.
func Newf(code, fix, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Fix: fix}
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// As returns the *Error in err's chain, or an INTERNAL error that hides err's text
// (internal errors may carry details that are not for users).
func As(err error) *Error {
	var p *Error
	if errors.As(err, &p) {
		return p
	}
	return New(Internal, "the broker failed to handle the request", "retry; if it persists, the operator should check the server log")
}

// Status is the HTTP status for the error's code.
func (e *Error) Status() int {
	switch e.Code {
	case BadRequest:
		return http.StatusBadRequest
	case TooLarge:
		return http.StatusRequestEntityTooLarge
	case Unauthenticated, Revoked:
		return http.StatusUnauthorized
	case Denied, ApprovalNeeded:
		return http.StatusForbidden
	case NotFound:
		return http.StatusNotFound
	case Conflict:
		return http.StatusConflict
	case RateLimited:
		return http.StatusTooManyRequests
	case NotReady, Unreachable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Exit codes (§11).
const (
	ExitOK          = 0
	ExitError       = 1
	ExitUsage       = 2
	ExitDenied      = 3
	ExitNotFound    = 4
	ExitUnreachable = 5
)

// ExitCode is the CLI exit code for the error's code.
func (e *Error) ExitCode() int {
	switch e.Code {
	case BadRequest, TooLarge:
		return ExitUsage
	case Unauthenticated, Revoked, Denied, ApprovalNeeded:
		return ExitDenied
	case NotFound:
		return ExitNotFound
	case Unreachable, NotReady:
		return ExitUnreachable
	}
	return ExitError
}
