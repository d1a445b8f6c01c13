/* Cell renderers for the Tasks grid (dash-ag-grid convention). No JSX: React.createElement.
 *
 * TaskActions: one button per action the server put in row.actions (computed from the task's
 *   status and the signed-in user's permissions; core checks again on every call). A click
 *   sets the grid's cellRendererData to {action, task_id, nonce}; the nonce makes every click
 *   a new value, so a re-render never looks like a click.
 * TaskLink: the task id as a link to its page.
 */
var dagcomponentfuncs = (window.dashAgGridComponentFunctions = window.dashAgGridComponentFunctions || {});

(function () {
    var LABELS = {
        prioritize: "Prioritize",
        urgent: "Urgent",
        critical: "Critical",
        cancel: "Cancel",
        retry: "Retry"
    };
    var STYLES = {
        prioritize: "btn-outline-primary",
        urgent: "btn-outline-warning",
        critical: "btn-outline-danger",
        cancel: "btn-outline-secondary",
        retry: "btn-outline-success"
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
                        style: { marginRight: "0.25rem", padding: "0 0.4rem", fontSize: "0.8rem" },
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
        if (!props.data || !props.value) {
            return null;
        }
        return React.createElement(
            "a",
            {
                href: "/tasks/" + encodeURIComponent(props.value),
                className: "task-link",
                "data-task-id": props.value
            },
            props.value
        );
    };
})();
