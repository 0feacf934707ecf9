package broker

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/ratelimit"
)

// AnonKind names a kind of request that no session vouches for. Each kind is
// admitted per source address and in all (Admit) before the broker reads it.
type AnonKind string

// The anonymous kinds: every route a caller may use without a session that makes
// the broker write, sign or verify on its behalf.
const (
	AnonSignup AnonKind = "signup" // POST /v1/accounts
	AnonLogin  AnonKind = "login"  // POST /v1/sessions
	AnonPair   AnonKind = "pair"   // POST /v1/pair/requests
	AnonPoll   AnonKind = "poll"   // GET /v1/pair/requests/{id}
	AnonSubmit AnonKind = "submit" // governance-signed entries and oidc rotate
)

// AnonKinds lists the kinds in a fixed order (flags, help).
var AnonKinds = []AnonKind{AnonSignup, AnonLogin, AnonPair, AnonPoll, AnonSubmit}

// Rate is Count requests per Window.
type Rate struct {
	Count  int
	Window time.Duration
}

func (r Rate) String() string {
	w := r.Window.String()
	if strings.HasSuffix(w, "m0s") {
		w = strings.TrimSuffix(w, "0s")
	}
	if strings.HasSuffix(w, "h0m") {
		w = strings.TrimSuffix(w, "0m")
	}
	return fmt.Sprintf("%d/%s", r.Count, w)
}

// AnonLimits maps each anonymous kind to its limit.
type AnonLimits map[AnonKind]AnonLimit

// AnonLimit limits one anonymous kind per source address and in all.
type AnonLimit struct {
	PerSource, Global Rate
}

// DefaultAnonLimits are the limits a broker uses for kinds its Config leaves out.
// Sign-ups and logins write ledger entries, pair requests one; polls and refused
// submissions cost only CPU. At these defaults an attacker on many addresses adds
// at most 400 + 7,200 + 7,200 entries an hour.
var DefaultAnonLimits = AnonLimits{
	AnonSignup: {PerSource: Rate{10, time.Hour}, Global: Rate{200, time.Hour}},
	AnonLogin:  {PerSource: Rate{10, time.Minute}, Global: Rate{120, time.Minute}},
	AnonPair:   {PerSource: Rate{10, time.Minute}, Global: Rate{120, time.Minute}},
	AnonPoll:   {PerSource: Rate{600, time.Minute}, Global: Rate{6000, time.Minute}},
	AnonSubmit: {PerSource: Rate{60, time.Minute}, Global: Rate{600, time.Minute}},
}

// anonSources bounds the source addresses each kind tracks at once (see limiter).
const anonSources = 10_000

type anonLimiter struct {
	limit             AnonLimit
	perSource, global ratelimit.Limiter
}

// anonLimiters holds each kind's limiters.
type anonLimiters map[AnonKind]*anonLimiter

func newAnonLimiters(cfg AnonLimits, mk ratelimit.New) anonLimiters {
	out := anonLimiters{}
	for _, k := range AnonKinds {
		lim, ok := cfg[k]
		if !ok || lim.PerSource.Count <= 0 || lim.PerSource.Window <= 0 || lim.Global.Count <= 0 || lim.Global.Window <= 0 {
			lim = DefaultAnonLimits[k]
		}
		name := "anon/" + string(k)
		out[k] = &anonLimiter{limit: lim,
			perSource: mk(ratelimit.Rule{Name: name + "/source", Count: lim.PerSource.Count, Window: lim.PerSource.Window, MaxKeys: anonSources}),
			global:    mk(ratelimit.Rule{Name: name + "/global", Count: lim.Global.Count, Window: lim.Global.Window, MaxKeys: 1})}
	}
	return out
}

// Admit decides whether the broker takes an anonymous request of kind from
// source at all. The API asks before it reads the request's body, so a refused
// caller costs one map lookup. The limiter is keyed by the source address only
// (an IPv4 address, or the /64 of an IPv6 one), never by anything the caller
// wrote. Kinds that write to the ledger spend their global share later, in
// admitGlobal, once the request is valid: garbage from many addresses cannot use
// up what real callers need.
func (b *Broker) Admit(kind AnonKind, source netip.Addr) error {
	a := b.anon[kind]
	if a == nil {
		return fmt.Errorf("no limit for anonymous kind %q", kind)
	}
	if ok, wait, err := a.perSource.Allow(context.Background(), sourceKey(source), b.cfg.Now()); err != nil {
		return errLimiter(err)
	} else if !ok {
		return tooMany(kind, "from your address", a.limit.PerSource, wait)
	}
	if !writes(kind) {
		return b.admitGlobal(kind)
	}
	return nil
}

// writes reports whether an admitted request of kind appends to the ledger.
func writes(kind AnonKind) bool {
	return kind == AnonSignup || kind == AnonLogin || kind == AnonPair
}

// admitGlobal spends the global share of an anonymous request of kind: at
// admission for kinds that write nothing, and for the others once the request
// is valid, just before the broker writes it.
func (b *Broker) admitGlobal(kind AnonKind) error {
	a := b.anon[kind]
	if ok, wait, err := a.global.Allow(context.Background(), "", b.cfg.Now()); err != nil {
		return errLimiter(err)
	} else if !ok {
		return tooMany(kind, "from all addresses together", a.limit.Global, wait)
	}
	return nil
}

// sourceKey is the limiter key of an address: its 4 bytes for IPv4 (and mapped
// IPv4), the first 8 bytes (the /64 a host usually gets) for IPv6.
func sourceKey(a netip.Addr) string {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return string(b[:])
	}
	b := a.As16()
	return string(b[:8])
}

var anonNames = map[AnonKind]string{AnonSignup: "sign-ups", AnonLogin: "logins", AnonPair: "pair requests",
	AnonPoll: "pair polls", AnonSubmit: "governance submissions"}

func tooMany(kind AnonKind, scope string, r Rate, wait time.Duration) error {
	secs := retryAfterSeconds(wait)
	p := problem.Newf(problem.RateLimited,
		fmt.Sprintf("wait %d s and retry; the operator can raise the limit with agentkeys server --%s-rate", secs, kind),
		"too many %s %s (at most %s)", anonNames[kind], scope, r)
	p.RetryAfter = secs
	return p
}
