// Package maildns is the DNS side of a mail domain, shared by the broker and
// the owner's CLI: what a valid domain name is, and the records a domain
// publishes (agentkeys mail dns) as a BIND zone. Standard library and apiv1
// only: the CLI links it without the server side.
package maildns

import (
	"fmt"
	"strings"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// Valid reports whether s is a lowercase DNS name of at least two labels:
// letters, digits and '-' (not at a label's ends), labels of 1-63, 253 in all.
func Valid(s string) bool {
	if len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// InboxAddress is the inbox address of the agent with wallet on domain:
// "a" + the first 12 hex digits of the wallet (lowercase) + "@" + domain; ""
// for a wallet too short. The daemon derives its own From with it.
func InboxAddress(wallet, domain string) string {
	w := strings.ToLower(strings.TrimPrefix(wallet, "0x"))
	if len(w) < 12 {
		return ""
	}
	return "a" + w[:12] + "@" + domain
}

// Normalize lowercases a domain name and drops one trailing dot.
func Normalize(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// DMARCPolicies are the policies a zone may ask receivers for.
var DMARCPolicies = []string{"none", "quarantine", "reject"}

// Zone is what a mail domain publishes.
type Zone struct {
	Domain string
	MX     string // host receiving the domain's mail (the mail edge)
	TTL    int    // seconds
	DKIM   []apiv1.DKIMKey
	DMARC  string // one of DMARCPolicies
}

// BIND renders z as a BIND zone fragment: MX, SPF (the MX may send), one DKIM
// TXT record per key, and DMARC with strict DKIM and relaxed SPF alignment.
func (z Zone) BIND() string {
	var b strings.Builder
	fmt.Fprintf(&b, "; mail records of %s (agentkeys mail dns); point %s at the mail edge (A/AAAA)\n", z.Domain, z.MX)
	fmt.Fprintf(&b, "$ORIGIN %s.\n$TTL %d\n", z.Domain, z.TTL)
	fmt.Fprintf(&b, "@\tIN\tMX\t10 %s.\n", z.MX)
	fmt.Fprintf(&b, "@\tIN\tTXT\t%s\n", txt("v=spf1 mx -all"))
	for _, k := range z.DKIM {
		fmt.Fprintf(&b, "%s._domainkey\tIN\tTXT\t%s\n", k.Selector, txt("v=DKIM1; k="+k.Alg+"; p="+k.Public))
	}
	fmt.Fprintf(&b, "_dmarc\tIN\tTXT\t%s\n", txt("v=DMARC1; p="+z.DMARC+"; adkim=s; aspf=r"))
	return b.String()
}

// txt quotes s as TXT character-strings of at most 255 bytes each (an RSA
// key's record needs several).
func txt(s string) string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, `"`+s[:255]+`"`)
		s = s[255:]
	}
	parts = append(parts, `"`+s+`"`)
	if len(parts) == 1 {
		return parts[0]
	}
	return "( " + strings.Join(parts, " ") + " )"
}
