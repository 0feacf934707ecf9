// Package problem is AgentKeys' error vocabulary (§11): every failure a user can see
// has a stable code, a sentence saying what happened and one saying how to fix it.
// The code also decides the HTTP status and the CLI exit code. Messages must never
// contain a secret.
//
// An Error may wrap the error that caused it (Wrap): errors.Is and errors.As see
// through the Error to its cause, but the cause is never part of what a user or a
// client sees — not in Error(), not in the JSON body, not in the CLI's Fix line — so a
// cause may carry detail (a path, a driver's text) that a message must not.
package problem

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a stable error code: clients and scripts match on it, so a code is never
// renamed.
type Code string

// Stable codes.
const (
	BadRequest      Code = "BAD_REQUEST"
	TooLarge        Code = "TOO_LARGE"
	Unauthenticated Code = "UNAUTHENTICATED"
	Revoked         Code = "REVOKED"
	ApprovalNeeded  Code = "APPROVAL_REQUIRED"
	Denied          Code = "DENIED"
	NotFound        Code = "NOT_FOUND"
	Conflict        Code = "CONFLICT"
	RateLimited     Code = "RATE_LIMITED"
	NotReady        Code = "NOT_READY"
	Unreachable     Code = "UNREACHABLE"
	LedgerInvalid   Code = "LEDGER_INVALID"
	Internal        Code = "INTERNAL"
)

// Error is a user-facing failure.
type Error struct {
	Code       Code   `json:"code"`
	Message    string `json:"message"`
	Fix        string `json:"fix,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"` // seconds, for RATE_LIMITED
	// Approval is the open request an APPROVAL_REQUIRED answer waits for.
	Approval *Approval `json:"approval,omitempty"`

	cause error // what went wrong underneath: for errors.Is/As and logs, never for users
}

// Approval names the owner's approval request a read waits for.
type Approval struct {
	ID      string `json:"id"`
	Expires int64  `json:"expires"` // unix seconds: the request lapses then
}

// New returns an Error.
func New(code Code, message, fix string) *Error {
	return &Error{Code: code, Message: message, Fix: fix}
}

// Newf returns an Error with a formatted message.
func Newf(code Code, fix, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Fix: fix}
}

// Wrap is Newf with the error that caused it: errors.Is and errors.As reach cause
// through the returned Error, which never shows cause's text. A message that names
// the cause formats it itself, and only when that text is safe for users.
func Wrap(cause error, code Code, fix, format string, args ...any) *Error {
	e := Newf(code, fix, format, args...)
	e.cause = cause
	return e
}

// Error is the code and the message; never the cause.
func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Unwrap returns the cause given to Wrap, or nil.
func (e *Error) Unwrap() error { return e.cause }

// As returns the *Error in err's chain, or an INTERNAL error that hides err's text
// (internal errors may carry details that are not for users).
func As(err error) *Error {
	var p *Error
	if errors.As(err, &p) {
		return p
	}
	return Wrap(err, Internal, "retry; if it persists, the operator should check the server log", "the broker failed to handle the request")
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
