package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/dotenv"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/seal"
)

// RefScheme starts a value of an --env-file line that names a credential.
const RefScheme = "agentkeys://"

// ServiceForEnv is the service a variable is imported as: NAME lower-cased, a
// trailing _API_KEY dropped, '_' → '-' (OPENAI_API_KEY → openai, GITHUB_TOKEN →
// github-token). `run` exports openai as OPENAI_API_KEY again.
func ServiceForEnv(name string) string {
	s := strings.ToLower(name)
	if t := strings.TrimSuffix(s, "_api_key"); t != "" {
		s = t
	}
	return strings.ReplaceAll(s, "_", "-")
}

// readEnvFile parses a .env file ("-": stdin) into entries, as a problem on failure.
func (e *env) readEnvFile(path, flag string) ([]dotenv.Entry, error) {
	var r io.Reader = e.stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, problem.Wrap(err, problem.BadRequest, "check the path of the "+flag, "cannot open %s: %v", path, errors.Unwrap(err))
		}
		defer f.Close()
		r = f
	}
	entries, err := dotenv.Parse(r)
	var le *dotenv.LineError
	if errors.As(err, &le) {
		return nil, problem.Newf(problem.BadRequest, "write each line as NAME=VALUE (a '#' line is a comment); nothing was done",
			"%s, %v", path, err)
	} else if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, "pass a .env file of at most 1 MiB", "cannot read %s: %v", path, err)
	}
	return entries, nil
}

func importCmd(e *env) *cobra.Command {
	var agent, approval string
	var maps []string
	var replace, asJSON bool
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Store every NAME=VALUE of a .env file as a credential (values never shown)",
		Long: `Read a .env file (FILE, or - for stdin) and store each NAME=VALUE as the
credential of a service: NAME lower-cased, a trailing _API_KEY dropped and '_'
turned into '-' (OPENAI_API_KEY → openai, GITHUB_TOKEN → github-token), or the
service --map NAME=SERVICE gives. Each value is encrypted to the broker's attested
enclave as store does; values are never printed. The whole file is checked
first: a malformed line is reported by its number and nothing is stored. A
service that already has a credential is refused unless --replace (which stores
a new version). Lines: NAME=VALUE, optionally "export NAME=VALUE", values
optionally in '…' or "…" quotes; '#' starts a comment line.`,
		Example: "  agentkeys import .env\n  agentkeys import .env --map DATABASE_URL=db --agent ci-bot\n" +
			"  agentkeys import .env --replace --json",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if agent != "" && !apiv1.ValidName(agent) {
				return problem.New(problem.BadRequest, "agent names use 1-63 lowercase letters, digits, '.', '_' or '-'", "e.g. --agent ci-bot")
			}
			mapped := map[string]string{}
			for _, m := range maps {
				name, svc, ok := strings.Cut(m, "=")
				if !ok || name == "" || !apiv1.ValidName(svc) {
					return problem.Newf(problem.BadRequest, "use --map NAME=SERVICE, e.g. --map DATABASE_URL=db", "--map %q is not NAME=SERVICE", m)
				}
				mapped[name] = svc
			}
			entries, err := e.readEnvFile(args[0], "file")
			if err != nil {
				return err
			}
			defer func() {
				for _, en := range entries {
					clear(en.Value)
				}
			}()
			if len(entries) == 0 {
				return problem.Newf(problem.BadRequest, "add NAME=VALUE lines", "%s has no NAME=VALUE line", args[0])
			}
			type item struct {
				line          int
				name, service string
				value         []byte
			}
			var items []item
			bySvc := map[string]string{}
			for _, en := range entries {
				svc, ok := mapped[en.Name]
				if ok {
					delete(mapped, en.Name)
				} else {
					svc = ServiceForEnv(en.Name)
				}
				switch {
				case !apiv1.ValidName(svc):
					return problem.Newf(problem.BadRequest, fmt.Sprintf("name its service with --map %s=SERVICE", en.Name),
						"%s, line %d: %s makes the service name %q, which is not 1-63 lowercase letters, digits, '.', '_' or '-' starting with a letter or digit",
						args[0], en.Line, en.Name, svc)
				case len(en.Value) == 0:
					return problem.Newf(problem.BadRequest, "give it a value or remove the line; nothing was stored", "%s, line %d: %s has an empty value", args[0], en.Line, en.Name)
				case bySvc[svc] != "":
					return problem.Newf(problem.BadRequest, fmt.Sprintf("name one of them with --map %s=SERVICE", en.Name),
						"%s, line %d: %s and %s would both be stored as %s", args[0], en.Line, bySvc[svc], en.Name, svc)
				}
				bySvc[svc] = en.Name
				items = append(items, item{en.Line, en.Name, svc, en.Value})
			}
			for name := range mapped {
				return problem.Newf(problem.BadRequest, "map only names the file sets", "--map %s: %s is not in %s", name, name, args[0])
			}
			s, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !replace {
				existing, err := c.List(ctx)
				if err != nil {
					return err
				}
				owner := agent
				if owner == "" {
					owner = apiv1.OwnerWide
				}
				var taken []string
				for _, cr := range existing {
					if cr.Agent == owner && bySvc[cr.Service] != "" {
						taken = append(taken, cr.Service)
					}
				}
				if len(taken) > 0 {
					return problem.Newf(problem.Conflict, "pass --replace to store new versions of them, or --map the names to other services; nothing was stored",
						"credentials already stored%s: %s", forAgentText(agent), strings.Join(taken, ", "))
				}
			}
			pub, _, err := attestedShielding(ctx, c.Client, s.PlatformKey)
			if err != nil {
				return err
			}
			agentField := apiv1.OwnerWide
			if agent != "" {
				agentField = agent
			}
			type stored struct {
				Name    string `json:"name"`
				Service string `json:"service"`
				Agent   string `json:"agent"`
				Version int    `json:"version"`
			}
			var done []stored
			for _, it := range items {
				ct, err := seal.To(pub, seal.CredentialInfo(s.Omni, agentField, it.service), it.value)
				if err == nil {
					var cr *apiv1.Credential
					if cr, err = c.Store(ctx, apiv1.StoreBody{Service: it.service, Agent: agent, Ciphertext: ct, Approval: approval}); err == nil {
						done = append(done, stored{it.name, it.service, cr.Agent, cr.Version})
						continue
					}
				}
				if len(done) > 0 { // say what is stored before the failure
					var names []string
					for _, d := range done {
						names = append(names, d.Name+" → "+d.Service)
					}
					fmt.Fprintf(e.stderr, "Stored before the failure: %s. Run import again with --replace once it is fixed.\n", strings.Join(names, ", "))
				}
				return err
			}
			if asJSON {
				return e.printJSON(map[string]any{"stored": done})
			}
			fmt.Fprintf(e.stdout, "Stored %d credentials from %s%s:\n", len(done), args[0], forAgentText(agent))
			for _, d := range done {
				fmt.Fprintf(e.stdout, "  %s → %s (version %d)\n", d.Name, d.Service, d.Version)
			}
			fmt.Fprintf(e.stdout, "Values were not printed. Use them with: agentkeys run --env-file FILE -- COMMAND (lines NAME=%sSERVICE)\n", RefScheme)
			return nil
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "store for one agent (alias) instead of owner-wide")
	cmd.Flags().StringArrayVar(&maps, "map", nil, "store NAME as SERVICE (NAME=SERVICE), repeatable")
	cmd.Flags().StringVar(&approval, "approval", "none", "required: every read needs your approval (agentkeys approve)")
	cmd.Flags().BoolVar(&replace, "replace", false, "store new versions of credentials that exist")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was stored as JSON (names, services, versions; never values)")
	return cmd
}

// envFileRefs reads an --env-file: the NAME=agentkeys://SERVICE references (in
// order) and the plain NAME=value lines, passed through as they are.
func (e *env) envFileRefs(path string) (refs [][2]string, plain []string, err error) {
	entries, err := e.readEnvFile(path, "--env-file")
	if err != nil {
		return nil, nil, err
	}
	for _, en := range entries {
		v := string(en.Value)
		clear(en.Value)
		if svc, ok := strings.CutPrefix(v, RefScheme); ok {
			if !apiv1.ValidName(svc) {
				return nil, nil, problem.Newf(problem.BadRequest, "write the reference as NAME="+RefScheme+"SERVICE with a stored service's name",
					"%s, line %d: %s names no valid service", path, en.Line, en.Name)
			}
			refs = append(refs, [2]string{en.Name, svc})
			continue
		}
		plain = append(plain, en.Name+"="+v)
	}
	return refs, plain, nil
}
