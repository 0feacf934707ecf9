package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// MaxWaitSeconds bounds how long get_credential (wait_seconds) and the socket
// (?wait=) wait for the owner's approval.
const MaxWaitSeconds = 300

// GetInput is the input of the get_credential tool.
type GetInput struct {
	Service     string `json:"service" jsonschema:"the service whose credential to fetch, e.g. openai"`
	WaitSeconds int    `json:"wait_seconds,omitempty" jsonschema:"when the credential needs the owner's approval: how long to wait for it (default 0: answer at once)"`
}

// ListInput is the (empty) input of list_credentials.
type ListInput struct{}

// CloudInput is the input of the cloud_credentials tool. Omitted and explicit
// values differ only where the schema says so: an explicit duration or
// session_name must be valid.
type CloudInput struct {
	Provider    string  `json:"provider" jsonschema:"the cloud: aws, gcp, azure or alicloud"`
	RoleARN     string  `json:"role_arn,omitempty" jsonschema:"aws and alicloud: the role to assume, e.g. arn:aws:iam::123456789012:role/agentkeys-agents or acs:ram::1234567890123456:role/agentkeys-agents"`
	SessionName *string `json:"session_name,omitempty" jsonschema:"aws and alicloud: the role session name (default agentkeys-<alias>)"`
	Duration    *int32  `json:"duration,omitempty" jsonschema:"aws and alicloud: credential lifetime in seconds (default: the role's; an hour on alicloud)"`
	// The other clouds' setup, as agentkeys oidc register <cloud> printed it.
	Audience        string `json:"audience,omitempty" jsonschema:"gcp: the workload identity provider's audience, //iam.googleapis.com/projects/…/providers/…"`
	ServiceAccount  string `json:"service_account,omitempty" jsonschema:"gcp: a service account to impersonate (optional)"`
	ClientID        string `json:"client_id,omitempty" jsonschema:"azure: the app registration's client id (AZURE_CLIENT_ID)"`
	TenantID        string `json:"tenant_id,omitempty" jsonschema:"azure: the tenant id (AZURE_TENANT_ID)"`
	Scope           string `json:"scope,omitempty" jsonschema:"gcp and azure: the access token's scope (default cloud-platform; https://management.azure.com/.default)"`
	OIDCProviderARN string `json:"oidc_provider_arn,omitempty" jsonschema:"alicloud: the RAM OIDC provider (ALIBABA_CLOUD_OIDC_PROVIDER_ARN)"`
}

// ServiceList is list_credentials' result and GET /credentials' body.
type ServiceList struct {
	Services         []string `json:"services" jsonschema:"services whose credentials this agent may fetch"`
	ApprovalRequired []string `json:"approval_required,omitempty" jsonschema:"those of services whose every fetch waits for the owner's approval"`
}

// Version is reported to MCP clients.
const Version = "0.1.0"

func toolError(p *problem.Error) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: Text(p)}}}
}

func toolText(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

// Wait is how long Get waits for the owner's approval of a credential that
// needs it, and whom it tells meanwhile.
type Wait struct {
	For      time.Duration                                // 0: answer at once
	Progress func(a problem.Approval, left time.Duration) // nil: nobody
}

// Backend answers the daemon's tools: a Source when this process holds the
// session, a SocketClient when it is a thin front of a daemon that runs as
// another user. The tools are the same either way.
type Backend interface {
	Get(ctx context.Context, service string, w Wait) ([]byte, error)
	List(ctx context.Context) (*ServiceList, error)
	AWSCredentials(ctx context.Context, r AWSRequest) (*AWSCredentials, error)
	CloudToken(ctx context.Context, r CloudRequest) (*CloudToken, error)
}

// NewMCPServer returns the daemon's MCP server with its tools. Each tool's
// input schema states the rules the daemon checks itself: an input the schema
// refuses gets a BAD_REQUEST from the daemon, before any broker round trip.
func NewMCPServer(src Backend, log *slog.Logger) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "agentkeys", Title: "AgentKeys credentials", Version: Version}, nil)
	addTool(s, &mcp.Tool{Name: "get_credential",
		Description: "Fetch the credential (API key) of a service this agent may use. Every call is audited. " +
			"A credential that needs the owner's approval is released once the owner approves: pass wait_seconds (up to 300) to wait for it. " +
			"Errors start with a stable code: BAD_REQUEST, DENIED, NOT_FOUND, RATE_LIMITED, REVOKED or UNREACHABLE."},
		schemaFor[GetInput](func(p map[string]*jsonschema.Schema) {
			str(p["service"], 1, 63, apiv1.NamePattern)
			integer(p["wait_seconds"], 0, MaxWaitSeconds)
		}),
		func(in *GetInput) error {
			if !apiv1.ValidName(in.Service) {
				return errBadService
			}
			return checkWait(in.WaitSeconds)
		},
		func(ctx context.Context, req *mcp.CallToolRequest, in GetInput) *mcp.CallToolResult {
			w := Wait{For: time.Duration(in.WaitSeconds) * time.Second, Progress: progressOf(ctx, req, in.WaitSeconds)}
			v, err := src.Get(ctx, in.Service, w)
			if err != nil {
				p := Stable(err)
				if p.Approval != nil && in.WaitSeconds == 0 {
					p.Fix += fmt.Sprintf("; or call get_credential with wait_seconds (up to %d) to wait for the approval", MaxWaitSeconds)
				}
				log.Info("get_credential refused", "service", Loggable(in.Service), "code", p.Code)
				return toolError(p)
			}
			defer clear(v)
			log.Info("get_credential", "service", in.Service, "bytes", len(v))
			return toolText(string(v))
		})
	list := &mcp.Tool{Name: "list_credentials",
		Description: "List the services whose credentials this agent may fetch now (names only), and which of them need the owner's approval."}
	if out, err := jsonschema.For[ServiceList](nil); err == nil {
		list.OutputSchema = out
	}
	addTool(s, list, schemaFor[ListInput](nil), func(*ListInput) error { return nil },
		func(ctx context.Context, _ *mcp.CallToolRequest, _ ListInput) *mcp.CallToolResult {
			l, err := src.List(ctx)
			if err != nil {
				p := Stable(err)
				log.Info("list_credentials refused", "code", p.Code)
				return toolError(p)
			}
			b, _ := json.Marshal(l)
			res := toolText(string(b))
			res.StructuredContent = json.RawMessage(b)
			return res
		})
	addTool(s, &mcp.Tool{Name: "cloud_credentials",
		Description: "Get short-lived cloud credentials through a setup the owner made with agentkeys oidc register <cloud>. " +
			"provider aws (role_arn): AWS STS AssumeRoleWithWebIdentity (also MinIO's STS, on a daemon started with --sts-endpoint); " +
			"gcp (audience, service_account?): a Google access token by workload identity federation; " +
			"azure (client_id, tenant_id): an Entra ID access token by a federated credential; " +
			"alicloud (role_arn, oidc_provider_arn): Alibaba Cloud STS credentials by AssumeRoleWithOIDC. " +
			"The daemon mints an identity token and makes the exchange itself, and serves the credential again until shortly before it expires. Errors start with a stable code."},
		cloudSchema(),
		func(in *CloudInput) error {
			if in.SessionName != nil && *in.SessionName == "" || in.Duration != nil && *in.Duration == 0 {
				return problem.New(CodeBadRequest, "session_name and duration, when given, must be valid", "omit them for the defaults")
			}
			if in.Provider == "aws" {
				return checkAWS(in.request())
			}
			return checkCloudRequest(in.cloudRequest())
		},
		func(ctx context.Context, _ *mcp.CallToolRequest, in CloudInput) *mcp.CallToolResult {
			if in.Provider != "aws" {
				ct, err := src.CloudToken(ctx, in.cloudRequest())
				if err != nil {
					p := Stable(err)
					log.Info("cloud_credentials refused", "provider", in.Provider, "code", p.Code)
					return toolError(p)
				}
				log.Info("cloud_credentials", "provider", in.Provider, "expires", ct.Expiration.Format(time.RFC3339))
				b, _ := json.Marshal(ct)
				return toolText(string(b))
			}
			cr, err := src.AWSCredentials(ctx, in.request())
			if err != nil {
				p := Stable(err)
				log.Info("cloud_credentials refused", "role_arn", loggableARN(in.RoleARN), "code", p.Code)
				return toolError(p)
			}
			log.Info("cloud_credentials", "role_arn", in.RoleARN, "expires", cr.Expiration.Format(time.RFC3339))
			b, _ := json.Marshal(cr)
			return toolText(string(b))
		})
	addMailSendTool(s, src, log)
	if m, ok := src.(MailReader); ok {
		addMailReadTools(s, m, log)
	}
	return s
}

// cloudSchema is cloud_credentials' input schema: the rules every provider
// shares, then each provider's required fields and their patterns.
func cloudSchema() *jsonschema.Schema {
	s := schemaFor[CloudInput](func(p map[string]*jsonschema.Schema) {
		p["provider"].Enum = []any{"aws", ProviderGCP, ProviderAzure, ProviderAlicloud}
		str(p["role_arn"], minARN, maxARN, anyARNPattern)
		str(p["session_name"], 2, 64, sessionNamePattern)
		integer(p["duration"], minDuration, maxDuration)
	})
	s.AllOf = cloudSchemaRules()
	return s
}

func (in *CloudInput) cloudRequest() CloudRequest {
	r := CloudRequest{Provider: in.Provider, Audience: in.Audience, ServiceAccount: in.ServiceAccount, ClientID: in.ClientID,
		TenantID: in.TenantID, Scope: in.Scope, RoleARN: in.RoleARN, OIDCProviderARN: in.OIDCProviderARN}
	if in.SessionName != nil {
		r.SessionName = *in.SessionName
	}
	if in.Duration != nil {
		r.Duration = *in.Duration
	}
	return r
}

func (in *CloudInput) request() AWSRequest {
	r := AWSRequest{RoleARN: in.RoleARN}
	if in.SessionName != nil {
		r.SessionName = *in.SessionName
	}
	if in.Duration != nil {
		r.Duration = *in.Duration
	}
	return r
}

var errBadWait = problem.Newf(CodeBadRequest, fmt.Sprintf("pass 0 (answer at once) to %d", MaxWaitSeconds),
	"the wait for the owner's approval (wait_seconds) must be 0 to %d seconds", MaxWaitSeconds)

func checkWait(seconds int) error {
	if seconds < 0 || seconds > MaxWaitSeconds {
		return errBadWait
	}
	return nil
}

// progressOf reports a get_credential waiting for the owner's approval as MCP
// progress notifications, when the client asked for them.
func progressOf(ctx context.Context, req *mcp.CallToolRequest, wait int) func(problem.Approval, time.Duration) {
	tok := req.Params.GetProgressToken()
	if tok == nil || req.Session == nil {
		return nil
	}
	return func(a problem.Approval, left time.Duration) {
		req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok,
			Progress: float64(wait) - left.Seconds(), Total: float64(wait),
			Message: fmt.Sprintf("waiting for the owner's approval: agentkeys approve %s (%s left)", a.ID, left.Round(time.Second))})
	}
}

// schemaFor is In's inferred input schema (descriptions from its jsonschema
// tags), with the daemon's rules added to its properties by rules.
func schemaFor[In any](rules func(map[string]*jsonschema.Schema)) *jsonschema.Schema {
	s, err := jsonschema.For[In](nil)
	if err != nil {
		panic(err) // the input types above are plain structs
	}
	if rules != nil {
		rules(s.Properties)
	}
	return s
}

func str(p *jsonschema.Schema, minLen, maxLen int, pattern string) {
	p.Type, p.Types = "string", nil // optional fields are pointers: omitted, not null
	p.MinLength, p.MaxLength, p.Pattern = &minLen, &maxLen, pattern
}

func integer(p *jsonschema.Schema, lo, hi float64) {
	p.Type, p.Types = "integer", nil
	p.Minimum, p.Maximum = &lo, &hi
}

// addTool adds a tool whose arguments decode into In and pass check before h
// runs; anything else answers BAD_REQUEST in the daemon's words (never echoing
// the input). check enforces at least what schema says, so the schema is what
// a client may rely on and the daemon never depends on the MCP library's
// validation.
func addTool[In any](s *mcp.Server, t *mcp.Tool, schema *jsonschema.Schema, check func(*In) error,
	h func(context.Context, *mcp.CallToolRequest, In) *mcp.CallToolResult) {
	t.InputSchema = schema
	var names []string
	for n := range schema.Properties {
		names = append(names, n)
	}
	slices.Sort(names)
	s.AddTool(t, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var in In
		if err := decodeArgs(req.Params.Arguments, &in, names); err != nil {
			return toolError(err), nil
		}
		if err := check(&in); err != nil {
			return toolError(Stable(err)), nil
		}
		return h(ctx, req, in), nil
	})
}

// decodeArgs decodes a tool's arguments strictly: an object with only the
// tool's arguments, each of its type.
func decodeArgs(raw json.RawMessage, in any, names []string) *problem.Error {
	fix := "the arguments are " + strings.Join(names, ", ") + " (see the tool's input schema)"
	if len(names) == 0 {
		fix = "call it without arguments"
	}
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		raw = json.RawMessage("{}")
	}
	// Names match exactly (encoding/json alone would take "SERVICE" for
	// "service"), and an argument given is not null: as the schema says.
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return problem.New(CodeBadRequest, "the arguments are not a JSON object of the tool's arguments", fix)
	}
	for k, v := range fields {
		if !slices.Contains(names, k) {
			return problem.New(CodeBadRequest, "the tool has no such argument", fix)
		}
		if string(v) == "null" {
			return problem.Newf(CodeBadRequest, fix, "argument %s is null", k)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(in)
	if err == nil && dec.More() {
		err = errors.New("trailing data")
	}
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te) && te.Field != "":
		want := "a string"
		switch te.Type.Kind() {
		case reflect.Int, reflect.Int32, reflect.Int64, reflect.Pointer:
			want = "an integer"
		}
		return problem.Newf(CodeBadRequest, fix, "argument %s must be %s", te.Field, want)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return problem.New(CodeBadRequest, "the tool has no such argument", fix)
	}
	return problem.New(CodeBadRequest, "the arguments are not a JSON object of the tool's arguments", fix)
}

// ServeMCP runs the MCP server on stdio until the client stops it: by closing
// stdin or, ending ctx, with SIGINT or SIGTERM. Either is a normal stop.
func ServeMCP(ctx context.Context, src Backend, log *slog.Logger) error {
	err := NewMCPServer(src, log).Run(ctx, &mcp.StdioTransport{})
	if ctx.Err() != nil || err == nil || errors.Is(err, io.EOF) || errors.Is(err, mcp.ErrConnectionClosed) {
		log.Info("mcp server stopped")
		return nil
	}
	return err
}

// statusOf is the HTTP status of a stable code.
func statusOf(code problem.Code) int {
	switch code {
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeDenied:
		return http.StatusForbidden
	case CodeNotFound:
		return http.StatusNotFound
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeRevoked:
		return http.StatusUnauthorized
	}
	return http.StatusBadGateway
}
