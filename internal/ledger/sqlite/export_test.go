package sqlite

import "database/sql"

// WriterDB is the driver's writer handle, for tests of its connection settings.
func WriterDB(d *Driver) *sql.DB { return d.w }
