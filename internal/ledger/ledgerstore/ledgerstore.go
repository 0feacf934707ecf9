// Package ledgerstore opens a ledger store from its URL, the way dex opens its
// storage from configuration: the URL's scheme picks the driver, the rest is the
// driver's. `agentkeys server --ledger` and `audit verify` name a store this way;
// the broker and package audit take the opened ledger.Driver. Adding a driver is
// one entry in drivers. A URL is never printed with its password.
package ledgerstore

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres"
	"github.com/agentkeys/agentkeys/internal/ledger/sqlite"
)

// driver opens one kind of store; rest is the URL after "scheme://".
type driver struct {
	example string
	open    func(rest string, readOnly bool) (ledger.Driver, error)
}

var drivers = map[string]driver{
	// sqlite://PATH: the rest is a file path, absolute (sqlite:///var/lib/l.db)
	// or relative to the working directory (sqlite://data/l.db).
	"sqlite": {"sqlite:///var/lib/agentkeys/ledger.db", func(path string, readOnly bool) (ledger.Driver, error) {
		if readOnly {
			return sqlite.OpenReadOnly(path)
		}
		return sqlite.Open(path)
	}},
	// postgres://USER@HOST:PORT/DATABASE?OPTIONS: a PostgreSQL database
	// that several brokers may share (package postgres; options as pgx reads
	// them, e.g. sslmode=verify-full, or host=/run/postgresql for a socket).
	"postgres":   {"postgres://agentkeys@db.example:5432/agentkeys", openPostgres("postgres")},
	"postgresql": {"postgresql://agentkeys@db.example:5432/agentkeys", openPostgres("postgresql")},
}

func openPostgres(scheme string) func(string, bool) (ledger.Driver, error) {
	return func(rest string, readOnly bool) (ledger.Driver, error) {
		if readOnly {
			return postgres.OpenReadOnly(scheme + "://" + rest)
		}
		return postgres.Open(scheme + "://" + rest)
	}
}

// Schemes lists the supported URL schemes, sorted.
func Schemes() []string { return slices.Sorted(maps.Keys(drivers)) }

// SQLite is the URL of the SQLite store in file path.
func SQLite(path string) string { return "sqlite://" + path }

// Source is a parsed store URL.
type Source struct {
	scheme, rest string
	d            driver
}

// Parse checks that raw names a supported store, without opening it. Its error
// names the supported schemes and never quotes the URL (it may hold a password).
func Parse(raw string) (Source, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if d, known := drivers[scheme]; ok && known && rest != "" {
		return Source{scheme: scheme, rest: rest, d: d}, nil
	}
	// Only the scheme is quoted: the rest may hold a password.
	what := "it is not a URL (scheme://…)"
	if ok && validScheme(scheme) {
		what = fmt.Sprintf("scheme %q is not supported", scheme)
		if _, known := drivers[scheme]; known {
			what = fmt.Sprintf("%s:// names no store", scheme)
		}
	}
	return Source{}, fmt.Errorf("ledger store: %s; supported: %s", what, Supported())
}

// Supported lists the supported schemes with an example URL of each.
func Supported() string {
	var out []string
	for _, s := range Schemes() {
		out = append(out, fmt.Sprintf("%s (%s)", s, drivers[s].example))
	}
	return strings.Join(out, ", ")
}

// validScheme reports whether s is a URL scheme (RFC 3986 §3.1).
func validScheme(s string) bool {
	for i, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}

// Open opens the store for reading and writing.
func (s Source) Open() (ledger.Driver, error) { return s.open(false) }

// OpenReadOnly opens an existing store for reading only; Commit fails.
func (s Source) OpenReadOnly() (ledger.Driver, error) { return s.open(true) }

func (s Source) open(readOnly bool) (ledger.Driver, error) {
	if s.d.open == nil {
		return nil, errors.New("ledgerstore: a zero Source opens nothing")
	}
	d, err := s.d.open(s.rest, readOnly)
	if err != nil { // nil, not the driver's typed nil pointer in a non-nil interface
		if s.scheme != "sqlite" { // sqlite's errors name the file already
			err = fmt.Errorf("ledger store %s: %w", s, err)
		}
		return nil, err
	}
	return d, nil
}

// HasPassword reports whether the URL carries a password (in its user info or
// its query). The CLI refuses one in argv, where any local user can read it: a
// PostgreSQL password belongs in PGPASSWORD or ~/.pgpass, which the driver reads.
func (s Source) HasPassword() bool {
	u, err := url.Parse(s.scheme + "://" + s.rest)
	if err != nil {
		return strings.Contains(s.rest, "@") // unparsable user info: assume the worst
	}
	_, pw := u.User.Password()
	q := u.Query()
	return pw || q.Has("password") || q.Has("sslpassword")
}

// String is the URL without its password.
func (s Source) String() string { return Redact(s.scheme + "://" + s.rest) }

// Redact returns raw with the password of its user info and of its query
// (password=, as PostgreSQL URLs allow) replaced; a value that does not parse as
// a URL but has user info (scheme://user:pass@…) loses all of it.
func Redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		if q := u.Query(); q.Has("password") || q.Has("sslpassword") {
			for _, k := range []string{"password", "sslpassword"} {
				if q.Has(k) {
					q.Set(k, "xxxxx")
				}
			}
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	if scheme, rest, ok := strings.Cut(raw, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			return scheme + "://xxxxx@" + rest[at+1:]
		}
	}
	return raw
}
