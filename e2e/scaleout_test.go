package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger/postgres/pgtest"
	"github.com/agentkeys/agentkeys/internal/porttest"
)

// This file runs docs/scale-out.md's sh blocks as written (with docs_test.go's
// terminals and substitution), on a throwaway PostgreSQL cluster: the role and
// database made with createuser/createdb, the first broker started on them, the
// second provisioned as the guide says (a copy of seed.sealed and the platform
// key, nothing else), and the chain checked read-only. The table changes only
// the database's address (the cluster's Unix socket, in PGHOST), the role's
// name (the cluster's superuser is already called agentkeys), paths and ports.

const scaleOutDoc = "../docs/scale-out.md"

func TestGuideScaleOut(t *testing.T) {
	c := pgtest.Start(t)
	h := newHarness(t)
	h.plant("PostgreSQL superuser password", c.Password())
	rolePW := "pw-" + randomHex(16)
	h.plant("the ledger role's password", rolePW)

	one := docBlocks(t, scaleOutDoc, "## One broker on PostgreSQL", "sh")
	second := docBlocks(t, scaleOutDoc, "### Provisioning a second broker", "sh")
	if len(one) != 3 || len(second) != 1 {
		t.Fatalf("want 3 sh blocks in One broker and 1 in Provisioning, found %d and %d: update the test", len(one), len(second))
	}
	path := "PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH")
	addrA := fmt.Sprintf("127.0.0.1:%d", porttest.Free(t))
	addrB := fmt.Sprintf("127.0.0.1:%d", porttest.Free(t))
	// Two machines: each its own home, data dir and /etc/agentkeys.
	homeA, homeB, etcA, etcB := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	dataA, dataB := filepath.Join(t.TempDir(), "server"), filepath.Join(t.TempDir(), "server")
	url := [][2]string{{"agentkeys@db.example:5432/agentkeys", "akdoc@/akdoc"}}

	// 1. The role and the database, as the cluster's superuser (there is no
	// sudo and no OS user postgres here: the superuser is named in PGUSER).
	admin := h.newTerminal("postgres", t.TempDir(), nil, path, "PGHOST="+c.Dir(), "PGUSER="+pgtest.User, "PGPASSWORD="+c.Password())
	r := admin.start(substitute(t, "scale-out createuser", one[0], [][2]string{{"sudo -u postgres ", ""}, {"agentkeys", "akdoc"}}))
	for _, prompt := range []string{`password for new role: $`, `again: $`} {
		r.waitFor(regexp.MustCompile(`(?i)` + prompt))
		admin.master.Write([]byte(rolePW + "\n"))
	}
	r.wait(nil)

	// 2. The password in a password file (mode 0600), on each machine.
	for _, etc := range []string{etcA, etcB} {
		if err := os.WriteFile(filepath.Join(etc, "pgpass"), []byte("*:*:akdoc:akdoc:"+rolePW+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// 3. The first broker, with the --issuer and --trusted-proxy every broker
	// gets (step 1 of "Provisioning a second broker").
	machineA := h.newTerminal("machine A", homeA, nil, path, "HOME="+homeA, "PGHOST="+c.Dir())
	flagsA := "agentkeys server --listen " + addrA + " --issuer https://keys.example.com --trusted-proxy 10.0.0.2 \\"
	srvA := machineA.start(substitute(t, "scale-out first broker", one[1], append(url,
		[2]string{"/etc/agentkeys/", etcA + "/"}, [2]string{"/var/lib/agentkeys/server", dataA}, [2]string{"agentkeys server \\", flagsA})))
	srvA.waitFor(regexp.MustCompile(`msg=ready`))
	checkA := h.newTerminal("check A", homeA, nil, path, "HOME="+homeA, "PGHOST="+c.Dir())
	wantIn(t, "curl readyz on A", checkA.run(fmt.Sprintf("curl -f http://%s/readyz\n", addrA), nil), `{"ready":true}`)

	// Provisioning: the data dir (0700) with only seed.sealed (0600), and the
	// same platform key (A's, in its default place).
	if err := os.MkdirAll(dataB, 0o700); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(dataA, "seed.sealed"), filepath.Join(dataB, "seed.sealed"))
	copyFile(t, filepath.Join(homeA, ".agentkeys", "platform.key"), filepath.Join(etcB, "platform.key"))
	machineB := h.newTerminal("machine B", homeB, nil, path, "HOME="+homeB, "PGHOST="+c.Dir())
	srvB := machineB.start(substitute(t, "scale-out second broker", second[0], append(url,
		[2]string{"/etc/agentkeys/", etcB + "/"}, [2]string{"/var/lib/agentkeys/server", dataB}, [2]string{"10.0.0.12:8090", addrB})))
	srvB.waitFor(regexp.MustCompile(`msg=ready`))
	checkB := h.newTerminal("check B", homeB, nil, path, "HOME="+homeB, "PGHOST="+c.Dir())
	wantIn(t, "curl readyz on B", checkB.run(fmt.Sprintf("curl -f http://%s/readyz\n", addrB), nil), `{"ready":true}`)
	if _, err := os.Stat(filepath.Join(dataB, "operator.key")); err == nil {
		t.Error("the second broker made an operator key of its own")
	}

	// Both name the balancer as their issuer (step 1 and step 3).
	for _, a := range []string{addrA, addrB} {
		out := checkB.run("curl -fsS http://"+a+apiv1.DiscoveryPath+"\n", nil)
		var d apiv1.Discovery
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &d); err != nil || d.Issuer != "https://keys.example.com" {
			t.Errorf("%s's discovery document: issuer %q (%v), want the balancer's URL:\n%s", a, d.Issuer, err, out)
		}
	}

	// The chain, read-only, while both run.
	out := checkA.run(substitute(t, "scale-out audit verify", one[2], append(url, [2]string{"/etc/agentkeys/", etcA + "/"})), nil)
	wantIn(t, "audit verify --ledger", out, "ledger valid: ")
}
