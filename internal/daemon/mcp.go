package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// GetInput is the input of the get_credential tool.
type GetInput struct {
	Service string `json:"service" jsonschema:"the service whose credential to fetch, e.g. openai"`
}

// ListInput is the (empty) input of list_credentials.
type ListInput struct{}

// Version is reported to MCP clients.
const Version = "0.1.0"

func toolError(p string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: p}}}
}

// Backend answers the daemon's tools: a Source when this process holds the
// session, a SocketClient when it is a thin front of a daemon that runs as
// another user. The tools are the same either way.
type Backend interface {
	Get(ctx context.Context, service string) ([]byte, error)
	List(ctx context.Context) ([]string, error)
	AWSCredentials(ctx context.Context, r AWSRequest) (*AWSCredentials, error)
}

// NewMCPServer returns the daemon's MCP server with its tools.
func NewMCPServer(src Backend, log *slog.Logger) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "agentkeys", Title: "AgentKeys credentials", Version: Version}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "get_credential",
		Description: "Fetch the credential (API key) of a service this agent may use. Every call is audited. " +
			"Errors start with a stable code: BAD_REQUEST, DENIED, NOT_FOUND, RATE_LIMITED, REVOKED or UNREACHABLE."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in GetInput) (*mcp.CallToolResult, any, error) {
			v, err := src.Get(ctx, in.Service)
			if err != nil {
				p := Stable(err)
				log.Info("get_credential refused", "service", Loggable(in.Service), "code", p.Code)
				return toolError(Text(p)), nil, nil
			}
			log.Info("get_credential", "service", in.Service, "bytes", len(v))
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(v)}}}, nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "list_credentials",
		Description: "List the services whose credentials this agent may fetch now (names only)."},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ ListInput) (*mcp.CallToolResult, ServiceList, error) {
			l, err := src.List(ctx)
			if err != nil {
				p := Stable(err)
				log.Info("list_credentials refused", "code", p.Code)
				return toolError(Text(p)), ServiceList{}, nil
			}
			return nil, ServiceList{Services: l}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "cloud_credentials",
		Description: "Get short-lived cloud credentials for a role the owner set up with agentkeys oidc register. " +
			"provider must be \"aws\"; the daemon mints an identity token and calls STS AssumeRoleWithWebIdentity itself, " +
			"and caches the credentials until shortly before they expire. Errors start with a stable code."},
		func(ctx context.Context, _ *mcp.CallToolRequest, in CloudInput) (*mcp.CallToolResult, any, error) {
			if in.Provider != "aws" {
				return toolError(Text(problem.New(CodeBadRequest, "this provider is not supported", "use provider \"aws\""))), nil, nil
			}
			cr, err := src.AWSCredentials(ctx, AWSRequest{RoleARN: in.RoleARN, SessionName: in.SessionName, Duration: in.Duration})
			if err != nil {
				p := Stable(err)
				log.Info("cloud_credentials refused", "role_arn", loggableARN(in.RoleARN), "code", p.Code)
				return toolError(Text(p)), nil, nil
			}
			log.Info("cloud_credentials", "role_arn", in.RoleARN, "expires", cr.Expiration.Format(time.RFC3339))
			b, _ := json.Marshal(cr)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}}, nil, nil
		})
	return s
}

// CloudInput is the input of the cloud_credentials tool.
type CloudInput struct {
	Provider    string `json:"provider" jsonschema:"the cloud: aws"`
	RoleARN     string `json:"role_arn" jsonschema:"the role to assume, e.g. arn:aws:iam::123456789012:role/agentkeys-agents"`
	SessionName string `json:"session_name,omitempty" jsonschema:"the role session name (default agentkeys-<alias>)"`
	Duration    int32  `json:"duration,omitempty" jsonschema:"credential lifetime in seconds (default: the role's)"`
}

// ServiceList is list_credentials' result and GET /credentials' body.
type ServiceList struct {
	Services []string `json:"services"`
}

// ServeMCP runs the MCP server on stdio until the client disconnects.
func ServeMCP(ctx context.Context, src Backend, log *slog.Logger) error {
	return NewMCPServer(src, log).Run(ctx, &mcp.StdioTransport{})
}

// statusOf is the HTTP status of a stable code.
func statusOf(code string) int {
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
