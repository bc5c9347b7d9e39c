//! The starter content every new workspace gets: three shared MJML components
//! (header, button, footer) and five templates built from them — welcome, onboarding
//! day 2, onboarding day 5, monthly newsletter and we-miss-you. The footer carries the
//! unsubscribe link and the postal address, so the templates pass the save checks.

use serde_json::json;

use super::components::CreateComponent;
use super::templates::CreateTemplate;
use crate::render::{Format, ParamDef, ParamType};

fn param(
    name: &str,
    kind: ParamType,
    required: bool,
    default: Option<serde_json::Value>,
) -> ParamDef {
    ParamDef {
        name: name.into(),
        kind,
        default,
        required,
    }
}

const HEADER: &str = r##"<mj-section background-color="{{background}}" padding="20px 16px">
  <mj-column>
    <mj-text align="center" font-size="22px" font-weight="bold" color="#ffffff" font-family="Helvetica, Arial, sans-serif">{{default title workspace.name}}</mj-text>
  </mj-column>
</mj-section>"##;

const BUTTON: &str = r##"<mj-button href="{{url}}" background-color="{{color}}" color="#ffffff" font-size="16px" border-radius="6px" inner-padding="12px 24px" font-family="Helvetica, Arial, sans-serif">{{label}}</mj-button>"##;

const FOOTER: &str = r##"<mj-section padding="24px 16px">
  <mj-column>
    <mj-divider border-color="#e5e7eb" border-width="1px" />
    <mj-text align="center" font-size="12px" color="#6b7280" line-height="18px" font-family="Helvetica, Arial, sans-serif">
      {{default workspace.company_name workspace.name}}<br />
      {{workspace.postal_address}}<br />
      You get this email because you signed up for {{workspace.name}}.
      <a href="{{unsubscribe_url}}" style="color:#6b7280">Unsubscribe</a>
    </mj-text>
  </mj-column>
</mj-section>"##;

/// The starter components.
pub fn components() -> Vec<CreateComponent> {
    vec![
        CreateComponent {
            name: "header".into(),
            description: Some("Brand bar with a title".into()),
            format: Format::Mjml,
            body: HEADER.into(),
            parameters: vec![
                param("title", ParamType::String, false, None),
                param(
                    "background",
                    ParamType::String,
                    false,
                    Some(json!("#4f46e5")),
                ),
            ],
        },
        CreateComponent {
            name: "button".into(),
            description: Some("Call-to-action button".into()),
            format: Format::Mjml,
            body: BUTTON.into(),
            parameters: vec![
                param("label", ParamType::String, true, None),
                param("url", ParamType::Url, true, None),
                param("color", ParamType::String, false, Some(json!("#4f46e5"))),
            ],
        },
        CreateComponent {
            name: "footer".into(),
            description: Some("Company, postal address and unsubscribe link (CAN-SPAM)".into()),
            format: Format::Mjml,
            body: FOOTER.into(),
            parameters: vec![],
        },
    ]
}

/// An MJML email: header, a body section, an optional button, footer.
fn email(title: &str, paragraphs: &[&str], button: Option<(&str, &str)>) -> String {
    let mut body = String::new();
    for p in paragraphs {
        body.push_str(&format!(
            "      <mj-text font-size=\"16px\" line-height=\"24px\" color=\"#111827\" font-family=\"Helvetica, Arial, sans-serif\">{p}</mj-text>\n"
        ));
    }
    if let Some((label, url)) = button {
        body.push_str(&format!(
            "      {{{{> button label=\"{label}\" url=\"{url}\"}}}}\n"
        ));
    }
    format!(
        r##"<mjml>
  <mj-head>
    <mj-title>{title}</mj-title>
    <mj-attributes><mj-all font-family="Helvetica, Arial, sans-serif" /></mj-attributes>
  </mj-head>
  <mj-body background-color="#f3f4f6" width="600px">
    {{{{> header}}}}
    <mj-section background-color="#ffffff" padding="24px 16px">
      <mj-column>
{body}      </mj-column>
    </mj-section>
    {{{{> footer}}}}
  </mj-body>
</mjml>
"##
    )
}

fn template(
    name: &str,
    description: &str,
    subject: &str,
    preheader: &str,
    html: String,
) -> CreateTemplate {
    CreateTemplate {
        name: name.into(),
        description: Some(description.into()),
        format: Format::Mjml,
        subject: subject.into(),
        preheader: Some(preheader.into()),
        html,
        text: None,
        publish: Some(true),
    }
}

/// The starter templates.
pub fn templates() -> Vec<CreateTemplate> {
    vec![
        template(
            "Welcome",
            "Sent right after sign-up",
            "Welcome to {{workspace.name}}, {{default first_name \"friend\"}}!",
            "Three things to do first",
            email(
                "Welcome",
                &[
                    "Hi {{default first_name \"there\"}},",
                    "Thanks for joining {{workspace.name}}. Your account is ready, and the fastest way to see what it can do is to set up your first project.",
                    "It takes about five minutes. If you get stuck, just reply to this email: a real person reads every answer.",
                ],
                Some(("Set up my first project", "https://example.com/start")),
            ),
        ),
        template(
            "Onboarding day 2",
            "Second day of the onboarding sequence",
            "{{default first_name \"Hi\"}}, one tip for today",
            "A shortcut most people miss",
            email(
                "Onboarding day 2",
                &[
                    "Hi {{default first_name \"there\"}},",
                    "Yesterday you created your account. Today, one tip: invite a teammate. Teams that work together in their first week get twice as far.",
                    "{{#if_attr \"plan\" \"pro\"}}Your Pro plan includes unlimited seats.{{else}}Your plan includes up to three seats.{{/if_attr}}",
                ],
                Some(("Invite a teammate", "https://example.com/invite")),
            ),
        ),
        template(
            "Onboarding day 5",
            "Fifth day of the onboarding sequence",
            "How is it going, {{default first_name \"friend\"}}?",
            "Your first week, in numbers",
            email(
                "Onboarding day 5",
                &[
                    "Hi {{default first_name \"there\"}},",
                    "You have been with us for five days. Here is what people usually do next: connect their data, automate one report, and share it with their team.",
                    "Want a hand? Book a 15-minute call and we will set it up together.",
                ],
                Some(("Book a call", "https://example.com/book")),
            ),
        ),
        template(
            "Monthly newsletter",
            "What is new this month",
            "{{workspace.name}} — what's new this month",
            "Product news, tips and one good read",
            email(
                "Monthly newsletter",
                &[
                    "Hi {{default first_name \"there\"}},",
                    "<strong>What's new.</strong> Faster exports, a cleaner dashboard and dark mode, the most requested feature of the year.",
                    "<strong>Tip of the month.</strong> Save a view as a template and reuse it across projects.",
                    "<strong>One good read.</strong> How small teams keep their inbox under control, from our blog.",
                ],
                Some(("Read the full update", "https://example.com/blog")),
            ),
        ),
        template(
            "We miss you",
            "Win-back for contacts who went quiet",
            "We miss you, {{default first_name \"friend\"}}",
            "Here is what changed since your last visit",
            email(
                "We miss you",
                &[
                    "Hi {{default first_name \"there\"}},",
                    "It has been a while since we last saw you. A lot has changed: the app is faster, simpler, and there is a lot more it can do for you.",
                    "Come back and take a look; your account and your data are right where you left them.",
                ],
                Some(("Take a look", "https://example.com")),
            ),
        ),
    ]
}
