package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/jsonschema-go/jsonschema"
)

// TestToolSchemas: each tool's input schema states the daemon's own rules
// (lengths, patterns, the provider enum, numeric bounds), so a client sees
// them before calling; and a call the schema refuses answers BAD_REQUEST with
// the daemon's text, never the MCP library's.
func TestToolSchemas(t *testing.T) {
	cs := mcpClient(t, Source{Dir: Dir(t.TempDir())}) // not paired: a valid call is DENIED
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	schemas := map[string]*jsonschema.Schema{}
	for _, tl := range res.Tools {
		b, _ := json.Marshal(tl.InputSchema)
		var s jsonschema.Schema
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v", tl.Name, err)
		}
		schemas[tl.Name] = &s
	}
	prop := func(tool, name string) *jsonschema.Schema {
		t.Helper()
		s := schemas[tool]
		if s == nil || s.Properties[name] == nil {
			t.Fatalf("%s has no property %s", tool, name)
		}
		return s.Properties[name]
	}
	str := func(tool, name string, minLen, maxLen int, pattern string) {
		t.Helper()
		p := prop(tool, name)
		if p.MinLength == nil || *p.MinLength != minLen || p.MaxLength == nil || *p.MaxLength != maxLen || p.Pattern != pattern {
			t.Errorf("%s.%s: minLength %v maxLength %v pattern %q; want %d, %d, %q", tool, name, p.MinLength, p.MaxLength, p.Pattern, minLen, maxLen, pattern)
		}
	}
	num := func(tool, name string, lo, hi float64) {
		t.Helper()
		p := prop(tool, name)
		if p.Minimum == nil || *p.Minimum != lo || p.Maximum == nil || *p.Maximum != hi || p.Type != "integer" {
			t.Errorf("%s.%s: %s minimum %v maximum %v; want integer %v..%v", tool, name, p.Type, p.Minimum, p.Maximum, lo, hi)
		}
	}
	str("get_credential", "service", 1, 63, `^[a-z0-9][a-z0-9._-]{0,62}$`)
	num("get_credential", "wait_seconds", 0, 300)
	str("cloud_credentials", "role_arn", 20, 2048, `^(arn|acs):[!-~]+$`)
	str("cloud_credentials", "session_name", 2, 64, `^[\w+=,.@-]{2,64}$`)
	num("cloud_credentials", "duration", 900, 43200)
	if p := prop("cloud_credentials", "provider"); fmt.Sprint(p.Enum) != "[aws gcp azure alicloud]" {
		t.Errorf("cloud_credentials.provider enum %v, want [aws gcp azure alicloud]", p.Enum)
	}
	for tool, req := range map[string][]string{"get_credential": {"service"}, "cloud_credentials": {"provider"}} {
		if got := strings.Join(schemas[tool].Required, ","); got != strings.Join(req, ",") {
			t.Errorf("%s requires %q, want %q", tool, got, strings.Join(req, ","))
		}
	}

	// The schema and the daemon agree, call for call: what the schema refuses
	// is BAD_REQUEST, what it accepts reaches the (unpaired) source: DENIED.
	const arn = "arn:aws:iam::123456789012:role/agents"
	const aliRole = "acs:ram::1234567890123456:role/agentkeys-agents"
	const gcpAud = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/agentkeys/providers/agentkeys-oidc"
	for _, c := range []struct {
		tool string
		args string
	}{
		{"get_credential", `{"service":"openai"}`},
		{"get_credential", `{"service":"openai","wait_seconds":300}`},
		{"get_credential", `{"service":"openai","wait_seconds":0}`},
		{"get_credential", `{}`},
		{"get_credential", `{"service":""}`},
		{"get_credential", `{"service":5}`},
		{"get_credential", `{"service":"Open AI"}`},
		{"get_credential", `{"service":"` + strings.Repeat("a", 64) + `"}`},
		{"get_credential", `{"service":"openai","wait_seconds":301}`},
		{"get_credential", `{"service":"openai","wait_seconds":-1}`},
		{"get_credential", `{"service":"openai","wait_seconds":1.5}`},
		{"get_credential", `{"service":"openai","extra":1}`},
		{"get_credential", `{"SERVICE":"openai"}`},
		{"get_credential", `{"service":null}`},
		{"list_credentials", `{}`},
		{"list_credentials", `{"extra":1}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"` + arn + `"}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"` + arn + `","duration":900,"session_name":"ci"}`},
		{"cloud_credentials", `{"provider":"gcp","role_arn":"` + arn + `"}`},
		{"cloud_credentials", `{"role_arn":"` + arn + `"}`},
		{"cloud_credentials", `{"provider":"aws"}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"not-an-arn-but-long-enough"}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"arn:aws:iam::1:role/a b"}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"` + arn + `","duration":-5}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"` + arn + `","duration":null}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"` + arn + `","duration":0}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"` + arn + `","session_name":""}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"` + arn + `","duration":899}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"` + arn + `","duration":43201}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"` + arn + `","session_name":"x"}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"` + arn + `","session_name":"a b"}`},
		{"cloud_credentials", `{"provider":"aws","role_arn":"` + aliRole + `"}`},
		{"cloud_credentials", `{"provider":"gcp","audience":"` + gcpAud + `"}`},
		{"cloud_credentials", `{"provider":"gcp","audience":"` + gcpAud + `","service_account":"agents@p.iam.gserviceaccount.com","scope":"https://www.googleapis.com/auth/devstorage.read_only"}`},
		{"cloud_credentials", `{"provider":"gcp"}`},
		{"cloud_credentials", `{"provider":"gcp","audience":"sts.amazonaws.com"}`},
		{"cloud_credentials", `{"provider":"gcp","audience":"` + gcpAud + `","service_account":"not an email"}`},
		{"cloud_credentials", `{"provider":"gcp","audience":"` + gcpAud + `","scope":"a\nb"}`},
		{"cloud_credentials", `{"provider":"gcp","audience":"` + gcpAud + `","duration":899}`},
		{"cloud_credentials", `{"provider":"azure","client_id":"11111111-2222-3333-4444-555555555555","tenant_id":"contoso.onmicrosoft.com"}`},
		{"cloud_credentials", `{"provider":"azure","client_id":"x"}`},
		{"cloud_credentials", `{"provider":"azure","client_id":"x","tenant_id":"a/b"}`},
		{"cloud_credentials", `{"provider":"alicloud","role_arn":"` + aliRole + `","oidc_provider_arn":"acs:ram::1234567890123456:oidc-provider/agentkeys"}`},
		{"cloud_credentials", `{"provider":"alicloud","role_arn":"` + aliRole + `","oidc_provider_arn":"acs:ram::1234567890123456:oidc-provider/agentkeys","session_name":"x"}`},
		{"cloud_credentials", `{"provider":"alicloud","role_arn":"` + aliRole + `"}`},
		{"cloud_credentials", `{"provider":"alicloud","role_arn":"` + arn + `","oidc_provider_arn":"acs:ram::1234567890123456:oidc-provider/agentkeys"}`},
		{"cloud_credentials", `{"provider":"alicloud","role_arn":"acs:ram::1234567890123456:oidc-provider/agentkeys","oidc_provider_arn":"` + aliRole + `"}`},
		{"cloud_credentials", `{"provider":"k8s","role_arn":"` + arn + `"}`},
	} {
		var args map[string]any
		if err := json.Unmarshal([]byte(c.args), &args); err != nil {
			t.Fatal(err)
		}
		rs, err := schemas[c.tool].Resolve(nil)
		if err != nil {
			t.Fatal(err)
		}
		schemaOK := rs.Validate(args) == nil
		text, isErr := callText(t, cs, c.tool, args)
		want := string(CodeDenied) + ": "
		if !schemaOK {
			want = string(CodeBadRequest) + ": "
		}
		if !isErr || !strings.HasPrefix(text, want) || len(text) > 512 {
			t.Errorf("%s %s (schema accepts: %v): error=%v %q; want %s…", c.tool, c.args, schemaOK, isErr, text, want)
		}
	}
}

// TestSocketWait: the socket's ?wait= is bounded as wait_seconds is.
func TestSocketWait(t *testing.T) {
	h := Handler(Source{Dir: Dir(t.TempDir())}, quiet) // not paired: a valid request is DENIED
	for q, want := range map[string]int{"": 403, "?wait=0": 403, "?wait=300": 403, "?wait=301": 400, "?wait=-1": 400, "?wait=abc": 400, "?wait=1e3": 400} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/credentials/openai"+q, nil))
		if rec.Code != want {
			t.Errorf("GET /credentials/openai%s: %d %s, want %d", q, rec.Code, rec.Body, want)
		}
	}
}
