package api

import (
	"reflect"
	"testing"

	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/registry"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// TestRecordsMirrorState: each apiv1 record has the fields, in order, and the
// JSON tags of the state record the API converts it from, so the wire shape
// is the one the state record always had. (A differing field name or type
// does not compile: the conversions in records.go and broker/oidc.go.)
func TestRecordsMirrorState(t *testing.T) {
	for _, p := range []struct{ state, wire any }{
		{agent.Agent{}, apiv1.Agent{}},
		{vault.Credential{}, apiv1.Credential{}},
		{vault.Approval{}, apiv1.Approval{}},
		{vault.Usage{}, apiv1.Usage{}},
		{registry.OidcKey{}, apiv1.OIDCKey{}},
		{mail.Domain{}, apiv1.Domain{}},
		{mail.Inbox{}, apiv1.Inbox{}},
		{mail.Grant{}, apiv1.Grant{}},
		{mail.Listed{}, apiv1.InboxListing{}},
	} {
		s, w := reflect.TypeOf(p.state), reflect.TypeOf(p.wire)
		if s.NumField() != w.NumField() {
			t.Errorf("%v has %d fields, %v has %d", s, s.NumField(), w, w.NumField())
			continue
		}
		for i := range s.NumField() {
			sf, wf := s.Field(i), w.Field(i)
			if sf.Name != wf.Name || sf.Tag.Get("json") != wf.Tag.Get("json") {
				t.Errorf("%v field %d is %s `json:%q`, %v has %s `json:%q`", s, i, sf.Name, sf.Tag.Get("json"), w, wf.Name, wf.Tag.Get("json"))
			}
		}
	}
}
