package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// addMailSendTool adds email_send to s when src can send mail.
func addMailSendTool(s *mcp.Server, src Backend, log *slog.Logger) {
	m, ok := src.(MailSender)
	if !ok {
		return
	}
	addTool(s, &mcp.Tool{Name: "email_send",
		Description: "Send an email as this agent, from one of its inboxes (default: its own). " +
			"The daemon builds the message, has AgentKeys DKIM-sign it (Ed25519 and RSA; the body never leaves the daemon) " +
			"and submits it to the mail edge (or, in AWS mode, to SES with its own STS credentials). Every send is audited. Errors start with a stable code: BAD_REQUEST, DENIED, REVOKED or UNREACHABLE."},
		schemaFor[SendRequest](func(p map[string]*jsonschema.Schema) {
			str(p["from"], 3, 254, addressPattern)
			lo, hi := 1, MaxRecipients
			p["to"].Type, p["to"].Types = "array", nil
			p["to"].MinItems, p["to"].MaxItems = &lo, &hi
			str(p["to"].Items, 3, 254, addressPattern)
			str(p["subject"], 1, MaxSubject, `^[^\r\n]+$`)
			str(p["text"], 1, MaxMailText, "")
			str(p["html"], 0, MaxMailText, "")
		}),
		func(in *SendRequest) error {
			_, err := checkSend(in)
			return err
		},
		func(ctx context.Context, _ *mcp.CallToolRequest, in SendRequest) *mcp.CallToolResult {
			res, err := m.SendMail(ctx, in)
			if err != nil {
				p := Stable(err)
				log.Info("email_send refused", "code", p.Code)
				return toolError(p)
			}
			log.Info("email_send", "from", res.From, "recipients", len(res.To), "bytes", res.Bytes, "message_id", res.MessageID)
			b, _ := json.Marshal(res)
			return toolText(string(b))
		})
}

// handleMailSend serves POST /mail/send on the daemon socket: a SendRequest
// body (at most 4 MiB), a SendResult answer.
func handleMailSend(mux *http.ServeMux, src Source, log *slog.Logger) {
	mux.HandleFunc("POST /mail/send", func(w http.ResponseWriter, r *http.Request) {
		var in SendRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			failSocket(w, badSend("the body is not a JSON object of from?, to, subject, text, html?"))
			return
		}
		res, err := src.SendMail(r.Context(), in)
		if err != nil {
			p := Stable(err)
			log.Info("mail send refused", "code", p.Code)
			failSocket(w, p)
			return
		}
		log.Info("mail sent", "from", res.From, "recipients", len(res.To), "bytes", res.Bytes, "message_id", res.MessageID)
		writeJSON(w, http.StatusOK, res)
	})
}

func failSocket(w http.ResponseWriter, err error) {
	p := Stable(err)
	writeJSON(w, statusOf(p.Code), map[string]any{"error": p})
}

// SendMail sends through the daemon, which builds, signs and submits.
func (c *SocketClient) SendMail(ctx context.Context, r SendRequest) (*SendResult, error) {
	var out SendResult
	if err := c.call(ctx, http.MethodPost, "/mail/send", nil, r, &out, 0); err != nil {
		return nil, err
	}
	return &out, nil
}
