/* Cell renderers for the Tasks grid (dash-ag-grid convention). No JSX: React.createElement.
 *
 * TaskActions: one button per action the server put in row.actions (computed from the task's
 *   status and the signed-in user's permissions; core checks again on every call). A click
 *   sets the grid's cellRendererData to {action, task_id, nonce}; the nonce makes every click
 *   a new value, so a re-render never looks like a click.
 * TaskLink: the cell's value (a short id: the end of the task's id, which tells rows apart, since
 *   ids begin with their creation time) as a link to the task's page; the whole id is its title.
 *   The id is row[idField] (cellRendererParams; "id" by default).
 * StatusBadge: the status as a coloured badge.
 */
var dagcomponentfuncs = (window.dashAgGridComponentFunctions = window.dashAgGridComponentFunctions || {});
var dagfuncs = (window.dashAgGridFunctions = window.dashAgGridFunctions || {});

(function () {
    var LABELS = {
        prioritize: "Prioritize",
        urgent: "Urgent",
        critical: "Critical",
        cancel: "Cancel task",
        retry: "Retry"
    };
    var STYLES = {
        prioritize: "btn-outline-primary",
        urgent: "btn-outline-urgent",
        critical: "btn-outline-danger",
        cancel: "btn-outline-secondary",
        retry: "btn-outline-success"
    };
    var BADGES = {
        queued: "text-bg-primary",
        running: "text-bg-info",
        succeeded: "text-bg-success",
        failed: "text-bg-danger",
        cancelled: "text-bg-secondary"
    };

    dagcomponentfuncs.TaskActions = function (props) {
        var React = window.React;
        var data = props.data;
        if (!data || !Array.isArray(data.actions) || !data.actions.length) {
            return null;
        }
        var buttons = data.actions
            .filter(function (action) { return Object.prototype.hasOwnProperty.call(LABELS, action); })
            .map(function (action) {
                return React.createElement(
                    "button",
                    {
                        key: action,
                        type: "button",
                        id: "action-" + action + "-" + data.id,
                        className: "btn btn-sm " + STYLES[action] + " task-action action-" + action,
                        "data-task-id": data.id,
                        "data-action": action,
                        "aria-label": LABELS[action] + " task " + data.short_id,
                        onClick: function (event) {
                            event.stopPropagation();
                            props.setData({ action: action, task_id: data.id, nonce: Date.now() + Math.random() });
                        }
                    },
                    LABELS[action]
                );
            });
        return React.createElement("span", { className: "task-actions", "data-task-id": data.id }, buttons);
    };

    dagcomponentfuncs.TaskLink = function (props) {
        var React = window.React;
        var id = props.data && props.data[props.idField || "id"];
        if (!id) {
            return null;
        }
        return React.createElement(
            "a",
            {
                href: "/tasks/" + encodeURIComponent(id),
                className: "task-link font-monospace",
                "data-task-id": id,
                title: id
            },
            props.value || id
        );
    };

    dagcomponentfuncs.StatusBadge = function (props) {
        var React = window.React;
        if (!props.value) {
            return null;
        }
        return React.createElement(
            "span",
            { className: "badge status-badge " + (BADGES[props.value] || "text-bg-light"), "data-status": props.value },
            props.value
        );
    };

    // Tab inside the actions cell moves between its buttons (the browser's), not to the next cell.
    dagfuncs.keepTabInActions = function (params) {
        var target = params.event && params.event.target;
        return params.event.key === "Tab" && !!target && target.tagName === "BUTTON";
    };
})();
