//! The admin UI in a real headless Chromium: sign-in, creating a site,
//! resource, group and policy, a gateway coming online live, CSRF and the
//! sign-in rate limit. See `web_support` for the set-up.

mod web_support;

use std::time::Duration;

use keyhole_portal::{
    policy::{ActorId, PolicyId},
    store::{GatewayRegistration, PolicyFilter},
    web::WebConfig,
};
use keyhole_proto::messages::connect::WireguardBackend;
use web_support::{ADMIN_EMAIL, ADMIN_PASSWORD, Browser, Portal, with_browser};

const LIVE: Duration = Duration::from_secs(10);

fn fast() -> WebConfig {
    WebConfig {
        live_interval: Duration::from_millis(300),
        ..WebConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_site_resource_group_policy_and_sees_a_gateway_come_online() {
    let portal = Portal::start(fast()).await.unwrap();
    with_browser("admin_flow", async |b: &Browser| {
        let store = &portal.state.store;

        // Unauthenticated pages send to the sign-in form and come back.
        b.goto(&portal.url("/resources")).await?;
        anyhow::ensure!(b.path().await? == "/sign-in", "not redirected to sign-in");
        b.shot("sign-in").await?;
        b.fill("#email", ADMIN_EMAIL).await?;
        b.fill("#password", ADMIN_PASSWORD).await?;
        b.submit("form[action='/sign-in'] button[type=submit]").await?;
        anyhow::ensure!(b.path().await? == "/resources", "not back at /resources");

        // Site: the deploy command shows a working gateway token once.
        b.goto(&portal.url("/sites")).await?;
        b.fill("#name", "berlin-office").await?;
        b.submit("form[action='/sites'] button[type=submit]").await?;
        let token = b.text("#site-token").await?;
        let command = b.text("#deploy-command").await?;
        anyhow::ensure!(command.contains(&format!("KEYHOLE_TOKEN={token}")), "{command}");
        anyhow::ensure!(command.contains(&format!("KEYHOLE_PORTAL_URL=http://{}", portal.addr)), "{command}");
        b.shot("site-created").await?;
        let info = store
            .verify_token(&token, chrono::Utc::now())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the shown token is not valid"))?;
        let site = store
            .list_sites()
            .await?
            .into_iter()
            .find(|s| s.name == "berlin-office")
            .ok_or_else(|| anyhow::anyhow!("site not stored"))?;
        anyhow::ensure!(
            info.owner == keyhole_portal::store::TokenOwner::Site(site.id),
            "token belongs to {:?}",
            info.owner
        );

        // A bad site name shows the error next to the field.
        b.goto(&portal.url("/sites")).await?;
        b.fill("#name", "berlin-office").await?;
        b.submit("form[action='/sites'] button[type=submit]").await?;
        let alert = b.text(".alert").await?;
        anyhow::ensure!(alert.contains("name is already taken"), "alert: {alert}");

        // Resource: an invalid CIDR is refused inline, the form keeps input.
        b.goto(&portal.url("/resources/new")).await?;
        b.fill("#name", "intranet").await?;
        b.select("#kind", "CIDR network").await?;
        b.fill("#address", "10.1.2.3/16").await?;
        b.fill("#filters", "tcp/443 udp/53").await?;
        b.submit("form.resource-form button[type=submit]").await?;
        let err = b.text("#address-error").await?;
        anyhow::ensure!(err.contains("host bits"), "address error: {err}");
        b.shot("resource-error").await?;
        b.fill("#address", "10.1.0.0/16").await?;
        b.submit("form.resource-form button[type=submit]").await?;
        anyhow::ensure!(b.path().await? == "/resources", "resource not created");
        let rows = b.text("#resources tbody").await?;
        anyhow::ensure!(rows.contains("intranet") && rows.contains("10.1.0.0/16") && rows.contains("tcp/443 udp/53") && rows.contains("berlin-office"), "{rows}");
        let resources = store.list_resources(10, 0).await?;
        anyhow::ensure!(resources.len() == 1 && resources[0].site_ids == vec![site.id], "{resources:?}");

        // Group with the admin as member.
        b.goto(&portal.url("/groups")).await?;
        b.fill("#name", "engineering").await?;
        b.submit("form[action='/groups'] button[type=submit]").await?;
        b.select("#member", ADMIN_EMAIL).await?;
        b.submit("form.row button[type=submit]").await?;
        let members = b.text("#members tbody").await?;
        anyhow::ensure!(members.contains(ADMIN_EMAIL), "{members}");
        let group = store.list_groups(10, 0).await?.remove(0);
        anyhow::ensure!(
            store.list_members(group.id, 10, 0).await? == vec![ActorId::User(portal.admin.id)],
            "membership not stored"
        );

        // Policy with conditions; a bad window is shown inline first.
        b.goto(&portal.url("/policies/new")).await?;
        b.select("#group_id", "engineering").await?;
        b.select("#resource_id", "intranet").await?;
        b.fill("#description", "engineers reach the intranet").await?;
        b.fill("#source_cidrs", "203.0.113.0/24").await?;
        b.click("input[name=sign_in_methods][value=password]").await?;
        b.fill("#timezone", "Europe/Berlin").await?;
        b.fill("#windows", "mon,tue,funday 09:00-17:00").await?;
        b.submit("form.policy-form button[type=submit]").await?;
        let err = b.text("#windows-error").await?;
        anyhow::ensure!(err.contains("funday"), "windows error: {err}");
        b.fill("#windows", "mon,tue,wed,thu,fri 08:00-18:00").await?;
        b.submit("form.policy-form button[type=submit]").await?;
        anyhow::ensure!(b.path().await? == "/policies", "policy not created");
        let rows = b.text("#policies tbody").await?;
        anyhow::ensure!(rows.contains("engineering") && rows.contains("intranet") && rows.contains("Europe/Berlin"), "{rows}");
        b.shot("policies").await?;

        // Phone width: the menu folds, the page does not scroll sideways
        // (wide tables scroll inside their own box).
        b.set_size(390, 844).await?;
        for path in ["/policies", "/policies/new", "/gateways", "/flow-log"] {
            b.goto(&portal.url(path)).await?;
            let fits = b
                .js("return document.documentElement.scrollWidth <= window.innerWidth")
                .await?;
            anyhow::ensure!(fits.as_bool() == Some(true), "{path} overflows at 390 px");
            b.shot(&format!("phone{}", path.replace('/', "-"))).await?;
        }
        b.click("label.nav-toggle").await?;
        b.wait_js("return document.querySelector('header nav').offsetHeight > 100", LIVE).await?;
        b.shot("phone-menu").await?;
        b.set_size(1280, 900).await?;
        let policies = store.list_policies(PolicyFilter::default(), 10, 0).await?;
        anyhow::ensure!(policies.len() == 1, "{policies:?}");
        let p = &policies[0];
        let _: PolicyId = p.policy.id;
        anyhow::ensure!(p.policy.group_id == group.id && p.policy.enabled, "{p:?}");
        anyhow::ensure!(p.policy.conditions.schedule.as_ref().is_some_and(|s| s.windows.len() == 1), "{p:?}");

        // Gateways: the table follows presence without a reload.
        b.goto(&portal.url("/gateways")).await?;
        b.wait_js("return document.querySelector('table[data-live]').dataset.connected === '1'", LIVE).await?;
        b.js("window.__noReload = 'still here'; return true").await?;
        let empty = b.text("table.gateways tbody").await?;
        anyhow::ensure!(empty.contains("No gateways yet"), "{empty}");
        let gw = store
            .register_gateway(
                &GatewayRegistration {
                    site_id: site.id,
                    name: "gw-berlin-1".into(),
                    public_key: "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".parse()?,
                    version: "0.1.0-test".into(),
                    backend: WireguardBackend::Userspace,
                    remote_ip: Some("198.51.100.7".parse()?),
                },
                chrono::Utc::now(),
            )
            .await?;
        b.wait_js(
            "const r = document.querySelector('tr[data-gateway]'); \
             return !!r && r.textContent.includes('gw-berlin-1') && r.textContent.includes('online')",
            LIVE,
        )
        .await?;
        let row = b.text("tr[data-gateway]").await?;
        anyhow::ensure!(row.contains("userspace") && row.contains("0.1.0-test") && row.contains("berlin-office"), "{row}");
        b.shot("gateway-online").await?;
        store.set_gateway_presence(gw.id, false, chrono::Utc::now()).await?;
        b.wait_js(
            "const r = document.querySelector('tr[data-gateway] td.status'); \
             return !!r && r.textContent.includes('offline')",
            LIVE,
        )
        .await?;
        anyhow::ensure!(
            b.js("return window.__noReload || null").await?.as_str() == Some("still here"),
            "the page reloaded"
        );

        // Sorting: clicking a header orders the rows, again reverses them.
        store.create_site("amsterdam-dc", chrono::Utc::now()).await?;
        store.create_site("zurich-lab", chrono::Utc::now()).await?;
        b.goto(&portal.url("/sites")).await?;
        let firsts = "return Array.from(document.querySelectorAll('#sites tbody tr td:first-child')).map(td => td.textContent).join(',')";
        b.click("#sites thead th:nth-child(1)").await?;
        let asc = b.js(firsts).await?;
        b.click("#sites thead th:nth-child(1)").await?;
        let desc = b.js(firsts).await?;
        anyhow::ensure!(asc.as_str() == Some("amsterdam-dc,berlin-office,zurich-lab"), "asc {asc}");
        anyhow::ensure!(desc.as_str() == Some("zurich-lab,berlin-office,amsterdam-dc"), "desc {desc}");

        // Sign-out ends the session server-side.
        b.submit("form.signout button").await?;
        anyhow::ensure!(b.path().await? == "/sign-in", "not signed out");
        b.goto(&portal.url("/sites")).await?;
        anyhow::ensure!(b.path().await? == "/sign-in", "session survived sign-out");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_posts_are_refused() {
    let portal = Portal::start(fast()).await.unwrap();
    // An attacker's page on another port of the same host (same site, so
    // SameSite=Lax alone would let the cookie through): a form that posts
    // to the portal on load, without the CSRF token.
    let evil = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let evil_addr = evil.local_addr().unwrap();
    let target = portal.url("/sites");
    let page = format!(
        "<!doctype html><form id=f method=post action='{target}'>\
         <input name=name value=forged-site><input name=_csrf value=guess></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let evil_app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let evil_server = tokio::spawn(async move {
        let _ = axum::serve(evil, evil_app).await;
    });
    with_browser("csrf", async |b: &Browser| {
        b.sign_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        anyhow::ensure!(b.path().await? != "/sign-in", "sign-in failed");

        b.goto(&format!("http://{evil_addr}/")).await?;
        b.wait_js("return document.title.startsWith('Request refused')", LIVE)
            .await?;
        let body = b.text("body").await?;
        anyhow::ensure!(body.contains("CSRF"), "{body}");
        b.shot("csrf-refused").await?;

        // Same-origin script with the wrong token: 403 as well.
        let status = b
            .js(
                "const r = new XMLHttpRequest(); r.open('POST', '/groups', false); \
                 r.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded'); \
                 r.send('name=forged-group&_csrf=nope'); return r.status;",
            )
            .await?;
        anyhow::ensure!(status.as_i64() == Some(403), "status {status}");
        // And with the real token it goes through (the check is not just
        // refusing everything).
        b.goto(&portal.url("/groups")).await?;
        b.fill("#name", "real-group").await?;
        b.submit("form[action='/groups'] button[type=submit]")
            .await?;

        let store = &portal.state.store;
        let sites = store.list_sites().await?;
        anyhow::ensure!(sites.iter().all(|s| s.name != "forged-site"), "{sites:?}");
        let groups: Vec<String> = store
            .list_groups(10, 0)
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect();
        anyhow::ensure!(groups == vec!["real-group".to_owned()], "{groups:?}");
        Ok(())
    })
    .await;
    evil_server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_shows_an_error_and_the_rate_limit_kicks_in() {
    let portal = Portal::start(WebConfig {
        failures_per_account: 3,
        failures_per_ip: 5,
        ..fast()
    })
    .await
    .unwrap();
    with_browser("rate_limit", async |b: &Browser| {
        b.sign_in(&portal, ADMIN_EMAIL, "wrong password").await?;
        anyhow::ensure!(b.path().await? == "/sign-in", "wrong password let in");
        let err = b.text("#sign-in-error").await?;
        anyhow::ensure!(err == "Wrong e-mail or password.", "{err}");
        anyhow::ensure!(
            b.js("return document.getElementById('email').value")
                .await?
                .as_str()
                == Some(ADMIN_EMAIL),
            "e-mail not kept"
        );
        b.shot("wrong-password").await?;

        for _ in 0..2 {
            b.sign_in(&portal, ADMIN_EMAIL, "still wrong").await?;
        }
        // Three failures for the account: even the right password waits.
        b.sign_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        let err = b.text("#sign-in-error").await?;
        anyhow::ensure!(err.starts_with("Too many failed sign-ins"), "{err}");
        anyhow::ensure!(b.path().await? == "/sign-in", "locked account signed in");
        b.shot("rate-limited").await?;

        // Per IP: two more failures on other accounts reach the IP's five;
        // then an account with no failures of its own is refused too.
        b.sign_in(&portal, "nobody@example.com", "x").await?;
        b.sign_in(&portal, "someone@example.com", "y").await?;
        b.sign_in(&portal, "third@example.com", "z").await?;
        let err = b.text("#sign-in-error").await?;
        anyhow::ensure!(
            err.starts_with("Too many failed sign-ins"),
            "per-IP limit: {err}"
        );
        Ok(())
    })
    .await;

    // A fresh portal (fresh limiter): the right password works.
    let portal = Portal::start(fast()).await.unwrap();
    with_browser("sign_in_ok", async |b: &Browser| {
        b.sign_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        anyhow::ensure!(b.path().await? == "/gateways", "at {}", b.path().await?);
        b.shot("gateways-empty").await?;
        Ok(())
    })
    .await;
}
