package mail

import (
	"fmt"
	"strings"
)

// DKIMPath is the enclave key (ed25519, RFC 8463) that signs domain's mail.
func DKIMPath(domain string) string { return "dkim/" + domain + "/v1" }

// DKIMKey is a domain's public DKIM key as published in DNS.
type DKIMKey struct {
	Selector string `json:"selector"`
	Alg      string `json:"alg"`    // "ed25519" (RFC 8463); "rsa" later
	Public   string `json:"public"` // base64 (std, padded) of the raw key, the p= tag
}

// DMARC policies a zone may ask receivers for.
var DMARCPolicies = []string{"none", "quarantine", "reject"}

// Zone is what a mail domain publishes.
type Zone struct {
	Domain string
	MX     string // host receiving the domain's mail (the mail edge)
	TTL    int    // seconds
	DKIM   []DKIMKey
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
