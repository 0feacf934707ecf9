package console

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// view is what every page template gets.
type view struct {
	Title, Active string
	Base          string // the console's secret path prefix: every URL is relative to it
	CSRF          string
	Flash         string
	Problem       *problem.Error
	Loaded        bool // the page's data loaded: its content is shown
	Data          any
}

var funcs = template.FuncMap{
	"unix":  func(s int64) string { return time.Unix(s, 0).UTC().Format("2006-01-02 15:04:05Z") },
	"nanos": func(n int64) string { return time.Unix(0, n).UTC().Format("2006-01-02 15:04:05Z") },
	"join":  func(s []string) string { return strings.Join(s, ", ") },
	"owner": func(agent string) bool { return agent == apiv1.OwnerWide || agent == "" },
	"list":  func(s ...string) []string { return s },
	"lower": strings.ToLower,
}

// parsePages parses each page with the shared layout.
func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "assets/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(assets, "assets/page_*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		t, err := template.Must(base.Clone()).ParseFS(assets, n)
		if err != nil {
			return nil, err
		}
		pages[strings.TrimSuffix(strings.TrimPrefix(n, "assets/page_"), ".html")] = t
	}
	return pages, nil
}

// route serves the pages of a logged-in browser; path is the request's path
// under the console's prefix, e.g. /agents.
func (c *Console) route(w http.ResponseWriter, r *http.Request, path, csrf string) {
	ctx := r.Context()
	get := r.Method != http.MethodPost
	var err error
	switch {
	case path == "/" && get:
		http.Redirect(w, r, c.base+"agents", http.StatusSeeOther)
		return
	case path == "/agents" && get:
		c.render(w, "agents", "Agents", csrf, c.agentsPage(ctx))
		return
	case path == "/agents/scope" && !get:
		err = c.setScope(ctx, r.PostFormValue("alias"), r.PostFormValue("scope"))
	case (path == "/agents/revoke" || path == "/agents/teardown") && get:
		c.render(w, "confirm", "Agents", csrf, c.agentConfirm(ctx, strings.TrimPrefix(path, "/agents/"), r.URL.Query().Get("alias")))
		return
	case path == "/agents/revoke" && !get:
		err = c.revoke(ctx, r.PostFormValue("alias"))
	case path == "/agents/teardown" && !get:
		err = c.teardown(ctx, r.PostFormValue("alias"))
	case path == "/pairing" && get:
		c.render(w, "pairing", "Pairing", csrf, c.pairingPage(ctx))
		return
	case path == "/pairing/rows" && get:
		c.renderRows(w, csrf, c.pairingPage(ctx))
		return
	case (path == "/pairing/approve" || path == "/pairing/deny") && !get:
		err = c.decide(ctx, strings.TrimPrefix(path, "/pairing/"), r.PostFormValue("id"), r.PostFormValue("vvc"))
	case path == "/approvals" && get:
		c.render(w, "approvals", "Approvals", csrf, c.approvalsPage(ctx))
		return
	case path == "/approvals/approve" && !get:
		err = c.approve(ctx, r.PostFormValue("id"))
	case path == "/credentials" && get:
		c.render(w, "credentials", "Credentials", csrf, c.credentialsPage(ctx))
		return
	case path == "/credentials/store" && !get:
		err = c.store(ctx, r)
	case path == "/credentials/delete" && get:
		q := r.URL.Query()
		c.render(w, "confirm", "Credentials", csrf, c.deleteConfirm(ctx, q.Get("service"), q.Get("agent")))
		return
	case path == "/credentials/delete" && !get:
		err = c.deleteCredential(ctx, r.PostFormValue("service"), r.PostFormValue("agent"))
	case path == "/activity" && get:
		c.render(w, "activity", "Activity", csrf, c.activityPage(ctx, r.URL.Query()))
		return
	default:
		refuse(w, http.StatusNotFound, "no such page")
		return
	}
	back := strings.Split(path, "/")[1] // the page of the form
	if err != nil {
		c.setFlash("", problem.As(err))
	} else if path == "/pairing/approve" {
		back = "agents" // the new agent
	}
	http.Redirect(w, r, c.base+back, http.StatusSeeOther)
}

// result is a page's data, or the problem that kept it from loading.
type result struct {
	data any
	err  error
}

// render writes page name with the layout; a flash message set by the last
// change is shown once.
func (c *Console) render(w http.ResponseWriter, name, active, csrf string, res result) {
	v := view{Title: active, Active: active, Base: c.base, CSRF: csrf, Data: res.data, Loaded: res.err == nil}
	c.mu.Lock()
	v.Flash, v.Problem = c.flash, c.flashProblem
	c.flash, c.flashProblem = "", nil
	c.mu.Unlock()
	status := http.StatusOK
	if res.err != nil {
		v.Problem = problem.As(res.err)
		status = v.Problem.Status()
	}
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout.html", v); err != nil {
		refuse(w, http.StatusInternalServerError, "the page could not be rendered")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func (c *Console) setFlash(msg string, p *problem.Error) {
	c.mu.Lock()
	c.flash, c.flashProblem = msg, p
	c.mu.Unlock()
}

// --- Agents -----------------------------------------------------------------

type agentRow struct {
	apiv1.Agent
	LastActivity string   // the newest usage row about the agent
	Readable     []string // credentials in its scope: its own and owner-wide
}

func (c *Console) agentsPage(ctx context.Context) result {
	s := c.cfg.Session
	agents, err := s.Agents(ctx)
	if err != nil {
		return result{err: err}
	}
	creds, err := s.List(ctx)
	if err != nil {
		return result{err: err}
	}
	usage, err := s.UsageFrom(ctx, url.Values{"limit": {"1000"}}, 0, false)
	if err != nil {
		return result{err: err}
	}
	rows := []agentRow{}
	for _, a := range agents {
		if a.Status == apiv1.AgentTornDown {
			continue
		}
		row := agentRow{Agent: a, LastActivity: "none"}
		for _, u := range usage.Usage {
			if u.Agent == a.Alias || u.Alias == a.Alias {
				row.LastActivity = fmt.Sprintf("%s %s %s", time.Unix(0, u.Time).UTC().Format("2006-01-02 15:04:05Z"), u.Action, u.Service)
			}
		}
		for _, cr := range creds {
			if (cr.Agent == a.Alias || cr.Agent == apiv1.OwnerWide) && apiv1.InScope(a.Scope, cr.Service) {
				row.Readable = append(row.Readable, cr.Service)
			}
		}
		rows = append(rows, row)
	}
	return result{data: rows}
}

func (c *Console) setScope(ctx context.Context, alias, scope string) error {
	set := []string{}
	for f := range strings.SplitSeq(scope, ",") {
		if f = strings.TrimSpace(f); f != "" {
			set = append(set, f)
		}
	}
	a, err := c.cfg.Session.SetScope(ctx, alias, apiv1.ScopeEdit{Set: set})
	if err != nil {
		return err
	}
	c.setFlash(fmt.Sprintf("Scope of %s is now: %s.", a.Alias, scopeText(a.Scope)), nil)
	return nil
}

func scopeText(s []string) string {
	if len(s) == 0 {
		return "(empty)"
	}
	return strings.Join(s, ", ")
}

// confirmation is the confirm page's data: what the action does, named.
type confirmation struct {
	Question string
	Deletes  []string // what is deleted, named
	Action   string   // the form's URL
	Fields   map[string]string
	Button   string
	Back     string
}

func (c *Console) agentConfirm(ctx context.Context, action, alias string) result {
	s := c.cfg.Session
	a, err := s.ActiveAgent(ctx, alias)
	if err != nil {
		return result{err: err}
	}
	cf := confirmation{Action: "agents/" + action, Fields: map[string]string{"alias": a.Alias}, Back: "agents"}
	if action == "revoke" {
		cf.Question = fmt.Sprintf("Revoke agent %s (generation %d, %s)? Its daemon's next request fails; its credentials stay.", a.Alias, a.Generation, a.Status)
		cf.Button = "Revoke " + a.Alias
		return result{data: cf}
	}
	creds, err := s.AgentCredentials(ctx, a.Alias)
	if err != nil {
		return result{err: err}
	}
	cf.Question = fmt.Sprintf("Tear down agent %s (generation %d): delete its %d credential(s) and revoke its sessions?", a.Alias, a.Generation, len(creds))
	for _, cr := range creds {
		cf.Deletes = append(cf.Deletes, fmt.Sprintf("credential %s for agent %s (version %d)", cr.Service, cr.Agent, cr.Version))
	}
	cf.Button = "Tear down " + a.Alias
	return result{data: cf}
}

func (c *Console) revoke(ctx context.Context, alias string) error {
	a, err := c.cfg.Session.RevokeAgent(ctx, alias)
	if err != nil {
		return err
	}
	c.setFlash(fmt.Sprintf("Revoked agent %s (generation %d). Pair it again to give it a new session.", a.Alias, a.Generation), nil)
	return nil
}

func (c *Console) teardown(ctx context.Context, alias string) error {
	r, err := c.cfg.Session.Teardown(ctx, alias)
	if err != nil {
		return err
	}
	c.setFlash(fmt.Sprintf("Tore down agent %s: %d credential(s) deleted, sessions revoked.", r.Alias, r.Deleted), nil)
	return nil
}

// --- Pairing ----------------------------------------------------------------

func (c *Console) pairingPage(ctx context.Context) result {
	list, err := c.cfg.Session.PendingPairs(ctx)
	return result{data: list, err: err}
}

// renderRows writes the pending requests' table rows alone: the page's script
// asks for them every few seconds and adds the new ones.
func (c *Console) renderRows(w http.ResponseWriter, csrf string, res result) {
	if res.err != nil {
		p := problem.As(res.err)
		refuse(w, p.Status(), p.Message)
		return
	}
	var buf bytes.Buffer
	if err := c.pages["pairing"].ExecuteTemplate(&buf, "rows", view{Base: c.base, CSRF: csrf, Data: res.data}); err != nil {
		refuse(w, http.StatusInternalServerError, "the rows could not be rendered")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

// decide approves or denies pair request id. An approval needs the VVC the
// daemon shows, typed by the owner: it must be the request's.
func (c *Console) decide(ctx context.Context, decision, id, typed string) error {
	s := c.cfg.Session
	p, err := s.PendingPair(ctx, id)
	if err != nil {
		return err
	}
	if decision == "approve" && strings.TrimSpace(typed) != p.VVC {
		return problem.Newf(problem.BadRequest, "type the 6-digit VVC that agentkeys daemon pair shows; if it shows another, deny the request",
			"the VVC you typed does not match pair request %s: not approved", id)
	}
	a, err := s.DecidePair(ctx, c.cfg.Identity, c.cfg.Server, p, decision, c.cfg.Now())
	if err != nil {
		return err
	}
	if a == nil {
		c.setFlash(fmt.Sprintf("Denied pair request %s (%s).", id, p.Alias), nil)
		return nil
	}
	c.setFlash(fmt.Sprintf("Approved: agent %s (generation %d), scope %s.", a.Alias, a.Generation, scopeText(a.Scope)), nil)
	return nil
}

// --- Approvals --------------------------------------------------------------

type approvalRow struct {
	apiv1.Approval
	Reader string
}

func (c *Console) approvalsPage(ctx context.Context) result {
	list, err := c.cfg.Session.PendingApprovals(ctx, c.cfg.Now())
	if err != nil {
		return result{err: err}
	}
	rows := make([]approvalRow, len(list))
	for i, a := range list {
		rows[i] = approvalRow{Approval: a, Reader: client.ApprovalReader(a)}
	}
	return result{data: rows}
}

func (c *Console) approve(ctx context.Context, id string) error {
	s := c.cfg.Session
	if _, err := s.PendingApproval(ctx, id); err != nil {
		return err
	}
	a, err := s.Approve(ctx, id)
	if err != nil {
		return err
	}
	c.setFlash(fmt.Sprintf("Approved %s: one read of %s until %s.", a.ID, a.Service, time.Unix(a.Until, 0).UTC().Format("15:04:05Z")), nil)
	return nil
}

// --- Credentials ------------------------------------------------------------

func (c *Console) credentialsPage(ctx context.Context) result {
	list, err := c.cfg.Session.List(ctx)
	return result{data: list, err: err}
}

// store seals the form's secret in this process to the attested enclave key,
// as `agentkeys store` does, and stores the ciphertext.
func (c *Console) store(ctx context.Context, r *http.Request) error {
	service, agentAlias := strings.TrimSpace(r.PostFormValue("service")), strings.TrimSpace(r.PostFormValue("agent"))
	approval := apiv1.ApprovalNone
	if r.PostFormValue("approval") == apiv1.ApprovalRequired {
		approval = apiv1.ApprovalRequired
	}
	secret := []byte(strings.TrimSuffix(strings.TrimSuffix(r.PostFormValue("secret"), "\n"), "\r"))
	defer clear(secret)
	if len(secret) == 0 {
		return problem.New(problem.BadRequest, "the secret is empty", "paste the secret into the Secret field")
	}
	if len(secret) > maxSecret {
		return problem.New(problem.TooLarge, "the secret is larger than 1 MiB", "store a smaller secret")
	}
	cr, err := c.cfg.Session.StoreSealed(ctx, c.cfg.PlatformKey, c.cfg.Omni, apiv1.StoreBody{Service: service, Agent: agentAlias, Approval: approval}, secret)
	if err != nil {
		return err
	}
	who := "all agents in scope"
	if cr.Agent != apiv1.OwnerWide {
		who = "agent " + cr.Agent
	}
	c.setFlash(fmt.Sprintf("Stored %s for %s (version %d).", cr.Service, who, cr.Version), nil)
	return nil
}

func (c *Console) deleteConfirm(ctx context.Context, service, agentAlias string) result {
	cr, err := c.cfg.Session.Credential(ctx, service, agentAlias)
	if err != nil {
		return result{err: err}
	}
	return result{data: confirmation{
		Question: fmt.Sprintf("Delete credential %s (version %d)? Readers lose it at once.", cr.Service, cr.Version),
		Deletes:  []string{fmt.Sprintf("credential %s for %s (version %d)", cr.Service, cr.Agent, cr.Version)},
		Action:   "credentials/delete", Fields: map[string]string{"service": service, "agent": agentAlias},
		Button: "Delete " + cr.Service, Back: "credentials",
	}}
}

func (c *Console) deleteCredential(ctx context.Context, service, agentAlias string) error {
	cr, err := c.cfg.Session.Credential(ctx, service, agentAlias)
	if err != nil {
		return err
	}
	if err := c.cfg.Session.Delete(ctx, service, agentAlias); err != nil {
		return err
	}
	c.setFlash(fmt.Sprintf("Deleted %s (version %d).", cr.Service, cr.Version), nil)
	return nil
}

// --- Activity ---------------------------------------------------------------

// windows are the Activity page's time filters.
var windows = []struct{ Name, Label string }{{"", "all time"}, {"1h", "last hour"}, {"24h", "last 24 hours"}, {"168h", "last 7 days"}, {"720h", "last 30 days"}}

type activity struct {
	Agent, Service, Kind, Since string
	Windows                     []struct{ Name, Label string }
	Kinds                       []string      // the kinds of the rows fetched: the kind filter's choices
	Rows                        []apiv1.Usage // newest first, at most maxRows
	Total                       int
	Chart                       chart
	Health                      health
}

type health struct {
	Summary audit.Summary
	Problem *problem.Error
}

// maxRows bounds the activity table; the chart counts every row.
const maxRows = 500

func (c *Console) activityPage(ctx context.Context, q url.Values) result {
	a := activity{Agent: q.Get("agent"), Service: q.Get("service"), Kind: q.Get("kind"), Since: q.Get("since"), Windows: windows}
	uq := url.Values{"limit": {"1000"}}
	if a.Agent != "" {
		uq.Set("agent", a.Agent)
	}
	if a.Service != "" {
		uq.Set("service", a.Service)
	}
	if a.Since != "" {
		d, err := time.ParseDuration(a.Since)
		if err != nil || d <= 0 {
			return result{err: problem.Newf(problem.BadRequest, "pick a time window from the list", "time window %q is not a duration", a.Since)}
		}
		uq.Set("since", c.cfg.Now().Add(-d).UTC().Format(time.RFC3339Nano))
	}
	s := c.cfg.Session
	page, err := s.UsageFrom(ctx, uq, 0, false)
	if err != nil {
		return result{err: err}
	}
	var rows []apiv1.Usage
	for _, u := range page.Usage {
		if !slices.Contains(a.Kinds, u.Action) {
			a.Kinds = append(a.Kinds, u.Action)
		}
		if a.Kind == "" || u.Action == a.Kind {
			rows = append(rows, u)
		}
	}
	if a.Kind != "" && !slices.Contains(a.Kinds, a.Kind) {
		a.Kinds = append(a.Kinds, a.Kind)
	}
	slices.Sort(a.Kinds)
	a.Total = len(rows)
	a.Chart = readsChart(rows)
	slices.Reverse(rows)
	a.Rows = rows[:min(len(rows), maxRows)]
	var pin ed25519.PublicKey
	if k, err := hex.DecodeString(c.cfg.PlatformKey); err == nil && len(k) == ed25519.PublicKeySize {
		pin = k
	}
	if a.Health.Summary, err = audit.VerifyServer(ctx, s, pin); err != nil {
		a.Health.Problem = problem.As(err)
	}
	return result{data: a}
}
