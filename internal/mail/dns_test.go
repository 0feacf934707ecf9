package mail

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
)

func TestZone(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	z := Zone{Domain: "agents.example.com", MX: "mail.agents.example.com", TTL: 300, DMARC: "quarantine",
		DKIM: []DKIMKey{{Selector: Selector, Alg: "ed25519", Public: base64.StdEncoding.EncodeToString(pub)}}}
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
