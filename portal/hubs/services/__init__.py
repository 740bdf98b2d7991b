"""One function per action on a hub, used by the web views, the API and the Django admin alike:
`decisions` (a request and its decision), `policy` (what self-service allows, GPU capacity)
and `changes` (changes to a running hub, rollback). Import the module you need; nothing is
re-exported here.
"""
