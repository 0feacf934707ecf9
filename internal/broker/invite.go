package broker

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// Invite is an operator's permission to create one owner account on a broker
// started with --signup invite. The operator signs it offline with a governance
// key (agentkeys server invite); the broker checks the signature against the
// governance keys in genesis, and records the invite's id in the account.created
// entry, so the ledger refuses a second account with the same invite.
type Invite struct {
	Server  string `json:"server"`  // the broker's URL (its issuer)
	ID      string `json:"id"`      // 16 random bytes, hex
	Expires int64  `json:"expires"` // unix seconds
	Key     string `json:"key"`     // hex Ed25519 governance key that signed
	Sig     string `json:"sig"`     // hex Ed25519 over InviteMessage
}

// invitePrefix starts every invite code.
const invitePrefix = "akinv1."

// maxInviteLen bounds an invite code (a real one is about 400 characters).
const maxInviteLen = 1024

// InviteMessage is what the governance key signs.
func InviteMessage(inv Invite) []byte {
	return []byte("agentkeys/invite/v1\n" + inv.Server + "\n" + inv.ID + "\n" + strconv.FormatInt(inv.Expires, 10))
}

// NewInvite signs an invite for server valid until expires and returns its code.
func NewInvite(key ed25519.PrivateKey, server string, expires time.Time) string {
	id := make([]byte, 16)
	rand.Read(id)
	inv := Invite{Server: strings.TrimRight(server, "/"), ID: hex.EncodeToString(id), Expires: expires.Unix(),
		Key: hex.EncodeToString(key.Public().(ed25519.PublicKey))}
	inv.Sig = hex.EncodeToString(ed25519.Sign(key, InviteMessage(inv)))
	b, _ := json.Marshal(inv)
	return invitePrefix + base64.RawURLEncoding.EncodeToString(b)
}

const inviteFix = "ask the broker's operator for an invite (agentkeys server invite) and pass it with agentkeys init --invite-file"

func badInvite(why string) error {
	return problem.New(problem.Denied, "the invite was refused: "+why, inviteFix)
}

// checkInvite verifies a sign-up's invite code and returns its id.
func (b *Broker) checkInvite(st ledger.State, code string) (string, error) {
	if code == "" {
		return "", problem.New(problem.Denied, "this broker creates accounts by invite only", inviteFix)
	}
	bad := badInvite
	raw, ok := strings.CutPrefix(code, invitePrefix)
	if !ok || len(code) > maxInviteLen {
		return "", bad("it is not an invite code")
	}
	js, err := base64.RawURLEncoding.DecodeString(raw)
	var inv Invite
	if err != nil || json.Unmarshal(js, &inv) != nil {
		return "", bad("it is not an invite code")
	}
	if inv.Server != b.cfg.Issuer {
		return "", bad("it is for " + strconv.Quote(inv.Server) + ", not this broker")
	}
	gv, err := ledger.CurrentGovernance(st)
	if err != nil {
		return "", err
	}
	pub, perr := hex.DecodeString(inv.Key)
	sig, serr := hex.DecodeString(inv.Sig)
	if perr != nil || serr != nil || len(pub) != ed25519.PublicKeySize || !slices.Contains(gv.Keys, inv.Key) ||
		!ed25519.Verify(pub, InviteMessage(inv), sig) {
		return "", bad("it is not signed by this broker's operator")
	}
	if id, err := hex.DecodeString(inv.ID); err != nil || len(id) != 16 {
		return "", bad("it is not an invite code")
	}
	if b.cfg.Now().Unix() > inv.Expires {
		return "", bad("it has expired")
	}
	if used, err := account.InviteUsed(st, inv.ID); err != nil {
		return "", err
	} else if used {
		return "", bad("it was already used")
	}
	return inv.ID, nil
}
