package api

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/agentkeys/agentkeys/internal/broker"
)

// maxForwardedHops bounds how much of X-Forwarded-For is read.
const maxForwardedHops = 32

// source is the address a request comes from: the TCP peer, unless the peer is
// one of the configured trusted proxies; then it is the right-most
// X-Forwarded-For address that is not itself a trusted proxy. Only trusted
// proxies are believed, so with none configured (the default) a caller cannot
// choose its address by sending the header.
func (s *server) source(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	if !s.trusted(addr) {
		return addr
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0 && i >= len(hops)-maxForwardedHops; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr // the last trusted hop is all that is known
		}
		addr = a.Unmap().WithZone("")
		if !s.trusted(addr) {
			return addr
		}
	}
	return addr
}

func (s *server) trusted(a netip.Addr) bool {
	for _, p := range s.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// anon wraps the handler of a request no session vouches for: the broker admits
// it (per source address and in all) before its body is read, so a refused
// caller costs the broker one lookup.
func (s *server) anon(kind broker.AnonKind, h func(http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.b.Admit(kind, s.source(r)); err != nil {
			return err
		}
		return h(w, r)
	}
}
