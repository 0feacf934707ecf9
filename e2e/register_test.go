package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/federation"
)

// TestRegisterSeaweedFS: `oidc register seaweedfs` prints SeaweedFS's iam.json
// (the provider trusting our issuer, the role, the own-prefix policy with the
// Null-tag Deny) and the `weed mini` command line.
func TestRegisterSeaweedFS(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	const issuer = "http://127.0.0.1:8090"
	var out federation.SeaweedFS
	if err := json.Unmarshal([]byte(h.akOK(home, "oidc", "register", "seaweedfs", "--issuer", issuer, "--json")), &out); err != nil {
		t.Fatalf("register seaweedfs --json: %v", err)
	}
	iam := out.IAM
	if len(iam.Providers) != 1 || iam.Providers[0].Config.Issuer != issuer || iam.Providers[0].Config.ClientID != "sts.amazonaws.com" ||
		iam.Policy.DefaultEffect != "Deny" || len(iam.Roles) != 1 || iam.Roles[0].RoleArn != out.RoleARN {
		t.Fatalf("iam.json: %+v", iam)
	}
	if iam.Roles[0].TrustPolicy.Statement[0].Principal["Federated"] != iam.Providers[0].Name {
		t.Fatalf("the role does not trust the provider by name: %+v", iam.Roles[0].TrustPolicy)
	}
	var nullDeny bool
	for _, s := range iam.Policies[0].Document.Statement {
		if s.Effect == "Deny" && s.Condition["Null"]["aws:PrincipalTag/agentkeys_user_wallet"] == "true" {
			nullDeny = true
		}
		if len(s.NotAction) != 0 {
			t.Fatalf("SeaweedFS has no NotAction: %+v", s)
		}
	}
	if !nullDeny {
		t.Fatalf("the policy lacks the Deny without the wallet tag: %+v", iam.Policies[0])
	}
	if strings.Join(out.Command[:2], " ") != "weed mini" || !strings.Contains(strings.Join(out.Command, " "), "-s3.iam.config iam.json") ||
		out.Endpoint != "http://127.0.0.1:8333" {
		t.Fatalf("command %v endpoint %s", out.Command, out.Endpoint)
	}
	// two runs draw two STS signing keys
	var again federation.SeaweedFS
	json.Unmarshal([]byte(h.akOK(home, "oidc", "register", "seaweedfs", "--issuer", issuer, "--json")), &again)
	if again.IAM.STS.SigningKey == iam.STS.SigningKey || len(iam.STS.SigningKey) < 24 {
		t.Fatal("the STS signing key is not drawn afresh")
	}

	text := h.akOK(home, "oidc", "register", "seaweedfs", "--issuer", issuer, "--port", "9555", "--bucket", "mine")
	for _, want := range []string{"# iam.json", `"allowedPrincipalTagKeys"`, "weed mini -ip 127.0.0.1 -ip.bind 127.0.0.1",
		"-s3.port 9555", "-bucket mine", "agentkeys daemon aws-credentials --role-arn " + out.RoleARN + " --sts-endpoint http://127.0.0.1:9555"} {
		if !strings.Contains(text, want) {
			t.Errorf("text output lacks %q:\n%s", want, text)
		}
	}
	if r := h.cli(home, "oidc", "register", "seaweedfs", "--issuer", "ftp://x"); r.code != 2 || !strings.Contains(r.stderr, "Error: BAD_REQUEST") {
		t.Fatalf("bad issuer: exit %d %s", r.code, r.stderr)
	}
}

// TestRegisterOut: `oidc register … --out DIR` writes each document as its own
// file, refuses to overwrite without --force (changing nothing), and names the
// files in the commands it prints.
func TestRegisterOut(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	dir := filepath.Join(t.TempDir(), "aws")
	args := []string{"oidc", "register", "aws", "--issuer", "https://keys.example.com", "--account", "123456789012", "--bucket", "b", "--out", dir}
	text := h.akOK(home, args...)
	var all federation.AWS
	json.Unmarshal([]byte(h.akOK(home, "oidc", "register", "aws", "--issuer", "https://keys.example.com", "--account", "123456789012", "--bucket", "b", "--json")), &all)
	for name, want := range map[string]federation.Policy{"trust-policy.json": all.TrustPolicy, "role-policy.json": all.RolePolicy, "bucket-policy.json": all.BucketPolicy} {
		p := filepath.Join(dir, name)
		var got federation.Policy
		if err := json.Unmarshal(fileBytes(t, p), &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if string(g) != string(w) {
			t.Errorf("%s differs from the --json document:\n%s\n%s", name, g, w)
		}
		if m := fileMode(t, p); m != 0o644 {
			t.Errorf("%s mode %o, want 644", name, m)
		}
		if !strings.Contains(text, "file://"+p) {
			t.Errorf("the commands do not name %s:\n%s", p, text)
		}
	}
	if strings.Contains(text, `"Statement"`) {
		t.Errorf("--out still prints the documents:\n%s", text)
	}

	// no overwrite without --force; nothing changes
	os.WriteFile(filepath.Join(dir, "role-policy.json"), []byte("mine"), 0o644)
	r := h.cli(home, append(args, "--account", "210987654321")...)
	if r.code != 1 || !strings.Contains(r.stderr, "Error: CONFLICT") || !strings.Contains(r.stderr, "role-policy.json") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("overwrite without --force: exit %d %s", r.code, r.stderr)
	}
	if string(fileBytes(t, filepath.Join(dir, "role-policy.json"))) != "mine" ||
		strings.Contains(string(fileBytes(t, filepath.Join(dir, "trust-policy.json"))), "210987654321") {
		t.Fatal("a refused --out changed files")
	}
	h.akOK(home, append(args, "--account", "210987654321", "--force")...)
	if !strings.Contains(string(fileBytes(t, filepath.Join(dir, "trust-policy.json"))), "210987654321") ||
		string(fileBytes(t, filepath.Join(dir, "role-policy.json"))) == "mine" {
		t.Fatal("--force did not replace the files")
	}

	// seaweedfs: iam.json holds the STS signing key, so it is 0600, and the command names it
	wdir := filepath.Join(t.TempDir(), "weed")
	text = h.akOK(home, "oidc", "register", "seaweedfs", "--issuer", "http://127.0.0.1:8090", "--out", wdir)
	if m := fileMode(t, filepath.Join(wdir, "iam.json")); m != 0o600 {
		t.Fatalf("iam.json mode %o, want 600", m)
	}
	var iam federation.SeaweedIAM
	if err := json.Unmarshal(fileBytes(t, filepath.Join(wdir, "iam.json")), &iam); err != nil || len(iam.Roles) != 1 {
		t.Fatalf("iam.json: %v %+v", err, iam)
	}
	if strings.Contains(text, iam.STS.SigningKey) || !strings.Contains(text, "-s3.iam.config "+filepath.Join(wdir, "iam.json")) {
		t.Fatalf("--out output:\n%s", text)
	}
	// --json with --out: the files written
	var res struct {
		Files []struct{ Name, Path, Mode string }
	}
	if err := json.Unmarshal([]byte(h.akOK(home, "oidc", "register", "k8s", "--issuer", "https://k", "--out", filepath.Join(t.TempDir(), "k"), "--json")), &res); err != nil ||
		len(res.Files) != 1 || res.Files[0].Name != "auth-config.json" || res.Files[0].Mode != "0644" {
		t.Fatalf("--out --json: %v %+v", err, res)
	}
	if r := h.cli(home, "oidc", "register", "gcp", "--issuer", "https://k", "--project", "p", "--project-number", "1", "--out", t.TempDir()); r.code != 2 {
		t.Fatalf("gcp has no documents; --out: exit %d %s", r.code, r.stderr)
	}
}
