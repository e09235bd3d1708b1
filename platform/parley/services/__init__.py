"""Domain operations: the only place business rules live. Each public function is one
transaction that checks permission and policy, writes its rows and its outbox event, and commits.
Services take what they need (a session, the settings) as arguments and never import a web
framework, a task queue or an SDK."""
