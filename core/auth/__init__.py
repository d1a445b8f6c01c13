"""Who may do what: permissions (one phrase table), the one authorize() every entry point calls,
passwords, sign-in and its throttle, browser sessions, users, API tokens and the audit log."""
