// Package mailread is the daemon's side of reading agent email (§9): one small
// seam, Source, that an inbox is read through, whatever holds it, and what the
// daemon does with a raw message once it has it (Parse, FindCode, WaitForCode).
//
// Sources: StoreSource reads the agent's own prefix of an object store (in S3
// mode with STS credentials minted from the daemon's own identity token:
// neither the broker nor the mail edge is on the read path); IMAPSource reads
// a mailbox over IMAP, the edge's (SASL OAUTHBEARER with an identity token) or
// an external one (an app password from the vault). Every Source passes the
// conformance suite in mailreadtest.
//
// Our servers never parse mail: this package runs in the daemon, beside the
// agent whose mail it is. It never logs a message's content, a password or a
// token, and its errors carry the daemon's stable codes (package problem).
package mailread

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// Source is one inbox, read by its own agent only. Safe for use by one
// goroutine at a time; Close releases what it holds (an IMAP connection).
type Source interface {
	// List returns the messages received at or after since, oldest first, at
	// most limit (1 to MaxList) of them; more is true when others follow (list
	// again from the last one's Received + 1ns).
	List(ctx context.Context, since time.Time, limit int) (refs []Ref, more bool, err error)
	// Get returns a message's raw bytes (RFC 5322, unparsed), or a NOT_FOUND
	// problem.
	Get(ctx context.Context, id string) ([]byte, error)
	// Marks returns the marks of those of ids that have any.
	Marks(ctx context.Context, ids []string) (map[string]Mark, error)
	// SetMark replaces a message's mark (a zero Mark clears it). Marks
	// written at the same time by others are kept.
	SetMark(ctx context.Context, id string, m Mark) error
	Close() error
}

// Ref names one message of a List.
type Ref struct {
	ID       string    `json:"id"`
	Received time.Time `json:"received"`
	Size     int64     `json:"size"`
}

// Mark is the daemon-side state of one message: read or not, and the agent's
// labels.
type Mark struct {
	Seen   bool     `json:"seen,omitempty"`
	Labels []string `json:"labels,omitempty"`
}

// Zero reports whether m marks nothing.
func (m Mark) Zero() bool { return !m.Seen && len(m.Labels) == 0 }

// Bounds of the inputs.
const (
	MaxList   = 100 // messages per List
	MaxLabels = 16  // labels per message
	// MaxMessage bounds a message the daemon reads: the edge's default size
	// limit (--mail-max-size, 25 MiB) plus room for its headers.
	MaxMessage = 26 << 20
)

// IDPattern is what a message id looks like: a store message's key name
// (<19-digit unix nanos>-<8 hex>) or an IMAP <uidvalidity>.<uid>.
const IDPattern = `^([0-9]{19}-[0-9a-f]{8}|[0-9]{1,10}\.[0-9]{1,10})$`

// LabelPattern is what a label looks like (an IMAP keyword too).
const LabelPattern = `^[a-z0-9][a-z0-9._-]{0,31}$`

var (
	idRE    = regexp.MustCompile(IDPattern)
	labelRE = regexp.MustCompile(LabelPattern)
)

// CheckID refuses what cannot be a message id; the error does not repeat it.
func CheckID(id string) error {
	if !idRE.MatchString(id) {
		return problem.New(problem.BadRequest, "the message id is not valid", "pass an id that email_list returned")
	}
	return nil
}

// CheckMark refuses labels that are not valid or too many, and duplicates.
func CheckMark(m Mark) error {
	if len(m.Labels) > MaxLabels {
		return problem.Newf(problem.BadRequest, "remove some labels", "a message has at most %d labels", MaxLabels)
	}
	seen := map[string]bool{}
	for _, l := range m.Labels {
		if !labelRE.MatchString(l) {
			return problem.New(problem.BadRequest, "a label is not valid", "labels are 1-32 lowercase letters, digits, '.', '_' or '-', e.g. done")
		}
		if seen[l] {
			return problem.New(problem.BadRequest, "a label is listed twice", "list each label once")
		}
		seen[l] = true
	}
	return nil
}

// CheckLimit turns List's limit into a page size, or refuses it (0 = 20).
func CheckLimit(limit int) (int, error) {
	switch {
	case limit == 0:
		return 20, nil
	case limit < 0 || limit > MaxList:
		return 0, problem.Newf(problem.BadRequest, fmt.Sprintf("pass 1 to %d", MaxList), "limit must be 1 to %d", MaxList)
	}
	return limit, nil
}

// A stored message's key, as the mail edge writes it (§9):
// <agent wallet, lowercase>/<inbox address>/<19-digit unix nanos>-<8 hex>.eml.
// Everything else under the inbox prefix is the daemon's (the manifest) and
// never matches.

// MessageKey is the key of the message named id under prefix (Prefix).
func MessageKey(prefix, id string) string { return prefix + id + ".eml" }

// ParseMessageKey returns the id and arrival time of a message key under
// prefix; ok is false for any other key.
func ParseMessageKey(prefix, key string) (id string, received time.Time, ok bool) {
	rest, found := strings.CutPrefix(key, prefix)
	if !found {
		return "", time.Time{}, false
	}
	id, found = strings.CutSuffix(rest, ".eml")
	if !found || len(id) != 28 || !idRE.MatchString(id) {
		return "", time.Time{}, false
	}
	return id, idTime(id), true
}

// idTime is the arrival time of a store message id (valid, 19 digits first).
func idTime(id string) time.Time {
	n, err := strconv.ParseInt(id[:19], 10, 64)
	if err != nil { // over int64: not a time the edge writes
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Prefix is the object-store prefix of an agent's inbox: the agent wallet in
// lower case, then the address (mail.Inbox.Prefix says the same on the ledger
// side).
func Prefix(wallet, address string) string {
	return strings.ToLower(wallet) + "/" + strings.ToLower(address) + "/"
}
