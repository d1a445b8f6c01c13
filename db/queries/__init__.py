"""Every SQL statement core runs, by subject. Functions take an open transaction (a Session from
`Database.session()` or a Connection from `Database.connect()`), so core decides what shares a
transaction and db decides how each statement is written."""
