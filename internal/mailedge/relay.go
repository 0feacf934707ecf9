package mailedge

// RelayAuth is the account the edge signs in to its smarthost with.
type RelayAuth struct {
	User     string
	Password string
}
