"""The names of `ToolRunWorkflow`'s interface, importable without the workflow code.

Clients (CLI, TUI, other SDKs' users) address the workflow by these names, so starting a CLI
never loads the workflow, its activities or process control. Each handler's decorator is bound
to its name here; no other module spells a handler name.
"""

from temporalio.common import SearchAttributeKey

WORKFLOW_NAME = "ToolRunWorkflow"
STATUS_QUERY = "status"
EVENTS_QUERY = "events"
DECIDE_UPDATE = "decide"
REQUEST_APPROVAL_UPDATE = "request_approval"
WAIT_DECISION_UPDATE = "wait_decision"
APPROVE_SIGNAL = "approve"
REJECT_SIGNAL = "reject"

# The activities the workflow schedules (registered in toolwarden.activities.tool_run).
RUN_TOOL_ACTIVITY = "run_tool"
PROJECT_RUN_ACTIVITY = "project_run"

TOOL_NAME = SearchAttributeKey.for_keyword("ToolName")
RUN_STATE = SearchAttributeKey.for_keyword("RunState")
APPROVAL_STATE = SearchAttributeKey.for_keyword("ApprovalState")

# Error types callers match on.
UNKNOWN_APPROVAL = "UnknownApproval"
APPROVER_NOT_ALLOWED = "ApproverNotAllowed"
RUN_ENDED = "RunEnded"
