/* The console's connection to its server, as the person sees it, and its keyboard shortcuts.
 *
 * Callbacks: every request Dash makes goes through window.fetch. When the session has ended
 * (a 401), a banner says so and offers to sign in again; when the server cannot be reached (a
 * network error, 502/503/504), a banner says "Connection lost, last updated hh:mm:ss" and goes
 * away by itself at the next answer. Either way Dash is answered 204 (no update): the page keeps
 * what it showed, and the renderer does not try to read a body it cannot parse.
 *
 * Keyboard: the confirmation dialog's reason box takes focus when it opens, Ctrl+Enter (or
 * Cmd+Enter) confirms; in the Tasks grid, Enter on a row opens the task, and in the actions cell
 * it moves focus to the first button (Tab then moves through the buttons). A dropdown's own
 * button is its tab stop (see dropdownTabStops).
 */
(function () {
    "use strict";
    var UPDATE = "/_dash-update-component";
    var lastAnswer = null;
    var state = "ok";

    function timeZone() {
        var holder = document.getElementById("user-time-zone");
        var zone = holder && holder.getAttribute("data-zone");
        return zone && zone !== "browser" ? zone : undefined;
    }

    function clock(date) {
        try {
            return date.toLocaleTimeString("en-GB", { timeZone: timeZone(), hour12: false });
        } catch (e) {
            return date.toISOString().slice(11, 19);
        }
    }

    function banner() {
        var element = document.getElementById("connection-banner");
        if (!element) {
            element = document.createElement("div");
            element.id = "connection-banner";
            element.setAttribute("role", "alert");
            element.className = "connection-banner";
            document.body.appendChild(element);
        }
        return element;
    }

    function show(kind, parts) {
        var element = banner();
        element.className = "connection-banner connection-" + kind;
        element.textContent = "";
        parts.forEach(function (part) {
            element.appendChild(typeof part === "string" ? document.createTextNode(part) : part);
        });
        element.hidden = false;
        state = kind;
    }

    function sessionEnded() {
        if (state === "session-ended") {
            return;
        }
        var link = document.createElement("a");
        link.href = "/login?next=" + encodeURIComponent(window.location.pathname + window.location.search);
        link.textContent = "Sign in again";
        link.className = "alert-link";
        show("session-ended", ["Your session has ended. ", link]);
    }

    // The time of the data on the page, as the page itself says it ("Updated hh:mm:ss"); the
    // last answer of any kind when the page shows none.
    function lastUpdated() {
        var label = document.querySelector(".updated");
        var shown = label && /^Updated (\S+)$/.exec(label.textContent.trim());
        if (shown) {
            return shown[1];
        }
        return lastAnswer ? clock(lastAnswer) : null;
    }

    function connectionLost() {
        var when = lastUpdated();
        var since = when ? "last updated " + when : "nothing loaded yet";
        show("lost", ["Connection lost, " + since + ". Trying again..."]);
    }

    function answered() {
        lastAnswer = new Date();
        if (state === "lost") {
            banner().hidden = true;
            state = "ok";
        }
    }

    var original = window.fetch;
    window.fetch = function (input, init) {
        var url = typeof input === "string" ? input : (input && input.url) || "";
        if (url.indexOf(UPDATE) === -1) {
            return original.apply(this, arguments);
        }
        return original.apply(this, arguments).then(
            function (response) {
                if (response.status === 401) {
                    sessionEnded();
                    return new Response(null, { status: 204 });
                }
                if (response.status >= 502 && response.status <= 504) {
                    connectionLost();
                    return new Response(null, { status: 204 });
                }
                answered();
                return response;
            },
            function () {
                connectionLost();
                return new Response(null, { status: 204 });
            }
        );
    };

    // -- keyboard --------------------------------------------------------------------------------

    document.addEventListener("keydown", function (event) {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
            var confirm = document.querySelector(".modal.show #reason-confirm");
            if (confirm) {
                event.preventDefault();
                confirm.click();
            }
            return;
        }
        if (event.key !== "Enter" || event.ctrlKey || event.metaKey || event.altKey) {
            return;
        }
        var cell = event.target && event.target.closest && event.target.closest("#tasks-grid .ag-cell");
        if (!cell || event.target !== cell) {
            return;
        }
        if (cell.getAttribute("col-id") === "actions") {
            var button = cell.querySelector("button");
            if (button) {
                event.preventDefault();
                button.focus();
            }
            return;
        }
        var row = cell.closest(".ag-row");
        var link = row && document.querySelector('#tasks-grid .ag-row[row-index="' + row.getAttribute("row-index") + '"] a.task-link');
        if (link) {
            event.preventDefault();
            link.click();
        }
    });

    // Dash 4's dcc.Dropdown takes Tab on a hidden input marked aria-hidden, which hands focus on to
    // the dropdown's button and is made a tab stop again whenever the button loses focus. A screen
    // reader lands on nothing there (axe: aria-hidden-focus, serious): the button is the tab stop.
    function dropdownTabStops() {
        document.querySelectorAll(".dash-dropdown-focus-target").forEach(function (proxy) {
            proxy.tabIndex = -1;
            var button = proxy.nextElementSibling;
            if (button && button.classList.contains("dash-dropdown") && !button.disabled) {
                button.tabIndex = 0;
            }
        });
    }
    var tabStopsPending = false;
    function scheduleTabStops() {
        if (!tabStopsPending) {
            tabStopsPending = true;
            window.requestAnimationFrame(function () {
                tabStopsPending = false;
                dropdownTabStops();
            });
        }
    }
    document.addEventListener("focusout", function (event) {
        if (event.target && event.target.classList && event.target.classList.contains("dash-dropdown")) {
            window.setTimeout(dropdownTabStops, 0);  // after the dropdown's own blur handler
        }
    }, true);
    new MutationObserver(scheduleTabStops).observe(document.documentElement, { subtree: true, childList: true });

    // The reason box (or, without one, the confirm button) takes focus when the dialog opens.
    var focusedDialog = null;
    new MutationObserver(function () {
        var dialog = document.querySelector(".modal.show");
        if (!dialog || !dialog.querySelector("#reason-confirm")) {
            focusedDialog = null;
            return;
        }
        if (focusedDialog === dialog) {
            return;
        }
        var field = document.getElementById("reason-field");
        var target = field && field.style.display !== "none" ? document.getElementById("reason-input") : dialog.querySelector("#reason-confirm");
        if (target) {
            focusedDialog = dialog;
            target.focus();
        }
    }).observe(document.documentElement, { subtree: true, attributes: true, attributeFilter: ["class"] });
})();
