package maildns

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

func TestValid(t *testing.T) {
	for _, d := range []string{"example.com", "a.b.c", "x-1.example"} {
		if !Valid(d) {
			t.Errorf("%q refused", d)
		}
	}
	for _, d := range []string{"", "localhost", "Example.com", "-a.com", "a-.com", "a..com", "a.com.", "a_b.com", "a/b.com", strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 127) + "com"} {
		if Valid(d) {
			t.Errorf("%q accepted", d)
		}
	}
	if n := Normalize(" Agents.Example.COM. "); n != "agents.example.com" {
		t.Errorf("Normalize: %q", n)
	}
}

func TestZone(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	z := Zone{Domain: "agents.example.com", MX: "mail.agents.example.com", TTL: 300, DMARC: "quarantine",
		DKIM: []apiv1.DKIMKey{{Selector: "ak1", Alg: "ed25519", Public: base64.StdEncoding.EncodeToString(pub)}}}
	got := z.BIND()
	for _, want := range []string{
		"$ORIGIN agents.example.com.\n$TTL 300\n",
		"@\tIN\tMX\t10 mail.agents.example.com.\n",
		"@\tIN\tTXT\t\"v=spf1 mx -all\"\n",
		"ak1._domainkey\tIN\tTXT\t\"v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub) + "\"\n",
		"_dmarc\tIN\tTXT\t\"v=DMARC1; p=quarantine; adkim=s; aspf=r\"\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("zone lacks %q:\n%s", want, got)
		}
	}
	long := strings.Repeat("x", 600)
	if q := txt(long); q != `( "`+long[:255]+`" "`+long[255:510]+`" "`+long[510:]+`" )` {
		t.Errorf("a long TXT value is not split in 255-byte strings: %s", q)
	}
}
