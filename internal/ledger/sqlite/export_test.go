package sqlite

import "database/sql"

// WriterConn is the driver's writer connection, for tests of its settings.
func WriterConn(d *Driver) *sql.Conn { return d.wc }
