package federation

import (
	"cmp"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestAWSDocuments(t *testing.T) {
	out, err := GenerateAWS(AWSInput{Issuer: "https://keys.example.com", Account: "123456789012", Bucket: "b",
		Pin: PinBoth, MrEnclave: "aa", MrSigner: "bb"})
	if err != nil {
		t.Fatal(err)
	}
	tp, _ := json.Marshal(out.TrustPolicy)
	for _, want := range []string{`"keys.example.com:aud":"sts.amazonaws.com"`, `"Null":{"aws:RequestTag/agentkeys_user_wallet":"false"}`,
		`"keys.example.com:sub":"enclave:aa:bb:*"`, `arn:aws:iam::123456789012:oidc-provider/keys.example.com`} {
		if !strings.Contains(string(tp), want) {
			t.Errorf("trust policy lacks %s: %s", want, tp)
		}
	}
	if strings.Contains(string(tp), "StringNotEquals") {
		t.Error("trust policy must not use StringNotEquals")
	}
	st := out.RolePolicy.Statement
	if len(st) != 4 || st[0].Action[0] != "s3:ListBucket" || len(st[0].Action) != 1 || st[2].Effect != "Deny" || st[3].Sid != DenyOtherSid {
		t.Fatalf("role policy: %+v", st)
	}
	if st[1].Resource[0] != "arn:aws:s3:::b/${aws:PrincipalTag/agentkeys_user_wallet}/*" {
		t.Fatalf("object resource %v", st[1].Resource)
	}
	for _, s := range out.BucketPolicy.Statement {
		if s.Principal["AWS"] != out.RoleARN {
			t.Fatalf("bucket statement without the role: %+v", s)
		}
	}
	if _, err := GenerateAWS(AWSInput{Issuer: "https://x", Account: "12"}); err == nil {
		t.Fatal("short account accepted")
	}
	if _, err := GenerateAWS(AWSInput{Issuer: "https://x", Account: "123456789012", Pin: PinMrSigner}); err == nil {
		t.Fatal("pin without mrsigner accepted")
	}
}

func TestOtherClouds(t *testing.T) {
	if g, err := GenerateGCP(GCPInput{Issuer: "https://k", Project: "p", ProjectNumber: "1", Wallets: []string{"0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"}}); err != nil ||
		!strings.Contains(g.Commands[1], "--issuer-uri=https://k") || g.Condition != "assertion.agentkeys_user_wallet in ['0xabcdef0123456789abcdef0123456789abcdef01']" {
		t.Fatalf("gcp: %v %+v", err, g)
	}
	for _, bad := range [][]string{nil, {"0x12"}, {"abcdef0123456789abcdef0123456789abcdef0123"}, {"0xabcdef0123456789abcdef0123456789abcdef0g"}, {"0xabcdef0123456789abcdef0123456789abcdef01'] || true || ['"}} {
		if _, err := GenerateGCP(GCPInput{Issuer: "https://k", Project: "p", ProjectNumber: "1", Wallets: bad}); err == nil {
			t.Errorf("gcp accepted agent wallets %q", bad)
		}
	}
	sub := "enclave:aa:bb:agent:0xabcdef0123456789abcdef0123456789abcdef01"
	if a, err := GenerateAzure(AzureInput{Issuer: "https://k", AppID: "x", TenantID: "t", Wallet: "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01", MrEnclave: "AA", MrSigner: "bb"}); err != nil ||
		a.Credential["issuer"] != "https://k" || a.Credential["subject"] != sub || a.Env["AZURE_CLIENT_ID"] != "x" || a.Env["AZURE_TENANT_ID"] != "t" {
		t.Fatalf("azure: %v %+v", err, a)
	}
	for _, bad := range []AzureInput{{AppID: "x", TenantID: "t"}, {AppID: "x", TenantID: "t", Subject: "enclave:a"},
		{AppID: "x", Subject: sub}, {AppID: "x", TenantID: "t", Subject: strings.ToUpper(sub)}, {AppID: "x", TenantID: "t", Wallet: "0x1", MrEnclave: "a", MrSigner: "b"}} {
		bad.Issuer = "https://k"
		if _, err := GenerateAzure(bad); err == nil {
			t.Errorf("azure accepted %+v", bad)
		}
	}
	fp := "0123456789abcdef0123456789ABCDEF01234567"
	if a, err := GenerateAli(AliInput{Issuer: "https://k", Account: "1", Fingerprint: fp, Wallets: []string{"0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"}}); err != nil ||
		!strings.Contains(a.Commands[0], "--Fingerprints "+strings.ToLower(fp)) || a.Env["ALIBABA_CLOUD_ROLE_ARN"] != a.RoleARN ||
		AliSubPatterns([]string{"0xab"})[0] != "enclave:*:agent:0xab" {
		t.Fatalf("ali: %v %+v", err, a)
	} else if b, _ := json.Marshal(a.TrustPolicy); !strings.Contains(string(b), `"oidc:sub":["enclave:*:agent:0xabcdef0123456789abcdef0123456789abcdef01"]`) {
		t.Fatalf("ali trust policy not pinned to the agent: %s", b)
	}
	for _, bad := range []AliInput{{Account: "1", Fingerprint: fp}, {Account: "1", Wallets: []string{"0xabcdef0123456789abcdef0123456789abcdef01"}},
		{Account: "x", Fingerprint: fp, Wallets: []string{"0xabcdef0123456789abcdef0123456789abcdef01"}}} {
		bad.Issuer = "https://k"
		if _, err := GenerateAli(bad); err == nil {
			t.Errorf("ali accepted %+v", bad)
		}
	}
	if k, err := GenerateK8s(K8sInput{Issuer: "https://k"}); err != nil || k["kind"] != "AuthenticationConfiguration" {
		t.Fatalf("k8s: %v %+v", err, k)
	}
}

func TestSeaweedFS(t *testing.T) {
	key := []byte("0123456789abcdef")
	out, err := GenerateSeaweedFS(SeaweedFSInput{Issuer: "http://127.0.0.1:8090", FileDir: "cfg", SigningKey: key})
	if err != nil {
		t.Fatal(err)
	}
	iam := out.IAM
	if iam.Policy.DefaultEffect != "Deny" || iam.Providers[0].Config.Issuer != "http://127.0.0.1:8090" ||
		iam.Roles[0].RoleName != "agentkeys-agents" || iam.Roles[0].AttachedPolicies[0] != iam.Policies[0].Name {
		t.Fatalf("iam: %+v", iam)
	}
	tr, _ := json.Marshal(iam.Roles[0].TrustPolicy)
	for _, want := range []string{`"Federated":"agentkeys"`, `"oidc:aud":"sts.amazonaws.com"`, `"Null":{"oidc:agentkeys_user_wallet":"false"}`} {
		if !strings.Contains(string(tr), want) {
			t.Errorf("trust policy lacks %s: %s", want, tr)
		}
	}
	st := iam.Policies[0].Document.Statement
	if len(st) != 3 || st[2].Effect != "Deny" || st[2].Condition["Null"]["aws:PrincipalTag/agentkeys_user_wallet"] != "true" {
		t.Fatalf("policy: %+v", st)
	}
	if got := strings.Join(out.Command, " "); !strings.Contains(got, "-s3.iam.config cfg/iam.json") || !strings.Contains(got, "-ip.bind 127.0.0.1") {
		t.Fatalf("command: %s", got)
	}
	for _, in := range []SeaweedFSInput{
		{Issuer: "http://127.0.0.1:8090", SigningKey: key[:8]},              // short signing key
		{Issuer: "http://127.0.0.1:8090", SigningKey: key, Port: 70000},     // port out of range
		{Issuer: "file:///x", SigningKey: key},                              // not http(s)
		{Issuer: "http://127.0.0.1:8090", SigningKey: key, Pin: "mrsigner"}, // pin without value
	} {
		if _, err := GenerateSeaweedFS(in); err == nil {
			t.Errorf("accepted %+v", in)
		}
	}
}

func TestMinIO(t *testing.T) {
	secret := []byte("0123456789abcdef")
	m, err := GenerateMinIO(MinIOInput{Issuer: "https://keys.example.com/", ClientSecret: secret, FileDir: "setup"})
	if err != nil {
		t.Fatal(err)
	}
	// the ARN MinIO itself gave client id "minio" (e2e TestMinIOFederation assumes it)
	if m.RoleARN != "arn:minio:iam:::role/MHR2BeH2-q1dHO2yx5U9Mf-tP9Q" || MinIORoleARN("minio", "eu-west-1") != "arn:minio:iam:eu-west-1::role/MHR2BeH2-q1dHO2yx5U9Mf-tP9Q" {
		t.Fatalf("role ARN %s", m.RoleARN)
	}
	env := map[string]string{}
	for _, v := range m.Env {
		if v.Why == "" {
			t.Errorf("%s has no explanation", v.Name)
		}
		env[v.Name] = v.Value
	}
	for k, want := range map[string]string{MinIOEnvConfigURL: "https://keys.example.com/.well-known/openid-configuration", MinIOEnvClientID: "minio",
		MinIOEnvClientSecret: "30313233343536373839616263646566", MinIOEnvRolePolicy: "agentkeys-agents", MinIOEnvSTSDuration: "15m0s"} {
		if env[k] != want {
			t.Errorf("%s = %q, want %q", k, env[k], want)
		}
	}
	if f := m.EnvFile(); !strings.Contains(f, "\nexport MINIO_IDENTITY_OPENID_CLIENT_SECRET='30313233343536373839616263646566'\n") {
		t.Errorf("env file:\n%s", f)
	}
	p, _ := json.Marshal(m.Policy)
	for _, want := range []string{`"Resource":["arn:aws:s3:::agentkeys/${jwt:preferred_username}/*"]`, `"s3:prefix":["${jwt:preferred_username}/*","${jwt:preferred_username}/"]`} {
		if !strings.Contains(string(p), want) {
			t.Errorf("policy lacks %s: %s", want, p)
		}
	}
	// every statement ties the wallet to the token's own sub, leaving the
	// measurements (which change with the build) open
	for _, st := range m.Policy.Statement {
		if sub, _ := st.Condition["StringLike"]["jwt:sub"].([]string); len(sub) != 1 || sub[0] != "enclave:*:agent:${jwt:preferred_username}" {
			t.Errorf("statement %s does not pin sub to the wallet: %+v", st.Sid, st.Condition)
		}
	}
	if strings.Contains(string(p), "${jwt:sub}") {
		t.Errorf("policy substitutes sub, which changes with the build: %s", p)
	}
	if !strings.HasPrefix(m.Commands[0], "mc alias set myminio http://127.0.0.1:9000 ") || !strings.Contains(m.Commands[2], "setup/minio-policy.json") ||
		!strings.Contains(m.Commands[3], "MINIO_CONFIG_ENV_FILE=setup/minio.env ") ||
		m.Agent[0] != "agentkeys daemon aws-credentials --role-arn "+m.RoleARN+" --sts-endpoint http://127.0.0.1:9000 --audience minio" {
		t.Errorf("commands %q, agent %q", m.Commands, m.Agent)
	}
	for name, bad := range map[string]MinIOInput{
		"no secret":          {ClientSecret: nil},
		"short secret":       {ClientSecret: secret[:15]},
		"cap under MinIO's":  {ClientSecret: secret, STSDuration: 14 * time.Minute},
		"cap over 12 h":      {ClientSecret: secret, STSDuration: 13 * time.Hour},
		"fractional cap":     {ClientSecret: secret, STSDuration: 20*time.Minute + time.Millisecond},
		"quote in audience":  {ClientSecret: secret, Audience: "mi'nio"},
		"bucket":             {ClientSecret: secret, Bucket: "Agent_Keys"},
		"region":             {ClientSecret: secret, Region: "1eu"},
		"policy name":        {ClientSecret: secret, Policy: "a b"},
		"endpoint":           {ClientSecret: secret, Endpoint: "minio:9000"},
		"quote in issuer":    {ClientSecret: secret, Issuer: "https://k/'x"},
		"issuer not http(s)": {ClientSecret: secret, Issuer: "ftp://k"},
	} {
		bad.Issuer = cmp.Or(bad.Issuer, "https://k")
		if _, err := GenerateMinIO(bad); err == nil {
			t.Errorf("%s: accepted %+v", name, bad)
		}
	}
}
