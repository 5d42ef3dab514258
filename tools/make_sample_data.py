"""Generate sample_data/translate.jsonl and sample_data/mixed.jsonl (deterministic, seeded).

All texts are written for batchroute; nothing is copied from the shared datasets.
Usage: python tools/make_sample_data.py   (rewrites both files; commit the result)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from batchroute.types import TASK_TYPES

OUT = Path(__file__).resolve().parents[1] / "sample_data"
SEED = 20250611

# (source language, text). Short UI strings, support mails, product copy, news-like lines, idioms.
SOURCES: list[tuple[str, str]] = [
    ("en", "Add to cart"),
    ("en", "Your password must contain at least 8 characters."),
    ("en", "Free shipping on orders over $50."),
    ("en", "Are you sure you want to delete this file? This action cannot be undone."),
    ("en", "Session expired. Please sign in again."),
    ("en", "It's raining cats and dogs."),
    ("en", "Break a leg tonight!"),
    ("en", "The early bird catches the worm."),
    (
        "en",
        "Thank you for contacting us. We have received your request and a member of our "
        "support team will get back to you within 24 hours.",
    ),
    (
        "en",
        "Hi Maria,\n\nI'm sorry to hear that your order arrived damaged. We have issued a "
        "full refund to your original payment method; it should appear within 5 to 7 business "
        "days. You don't need to return the item.\n\nBest regards,\nDaniel, Customer Care",
    ),
    (
        "en",
        "This lightweight hiking backpack holds 28 liters, has a padded laptop sleeve and "
        "is made from recycled, water-resistant fabric.",
    ),
    (
        "en",
        "Our stainless steel water bottle keeps drinks cold for 24 hours and hot for 12. "
        "It is dishwasher safe, leak-proof and comes with two lids.",
    ),
    (
        "en",
        "The city council approved a plan on Tuesday to add 40 kilometres of protected "
        "bike lanes over the next three years.",
    ),
    (
        "en",
        "Heavy snowfall closed several mountain passes overnight, and officials advised "
        "drivers to avoid non-essential travel.",
    ),
    ("en", "Click the link below to verify your email address."),
    (
        "en",
        "We'll be performing scheduled maintenance on Sunday from 02:00 to 04:00 UTC. "
        "During this time the dashboard may be unavailable.",
    ),
    (
        "en",
        "Welcome aboard! Here are three quick steps to set up your account:\n\n1. Upload a "
        "profile picture.\n2. Connect your calendar.\n3. Invite your teammates.\n\nIf you get "
        "stuck, our help center has short videos for every step.",
    ),
    (
        "en",
        "Dear tenants,\n\nThe water supply to the building will be interrupted on Thursday "
        "between 9 a.m. and 1 p.m. while the pipes in the basement are replaced. Please store "
        "some water in advance.\n\nWe apologise for the inconvenience and thank you for your "
        "patience.\n\nThe management",
    ),
    (
        "en",
        "Researchers have found that short walks after meals can help lower blood sugar "
        "levels. In a small study, participants who walked for ten minutes after dinner had "
        "noticeably smaller glucose spikes than those who sat down. The authors caution that "
        "larger trials are needed, but say the habit is easy to adopt and carries little risk. "
        "They also note that the effect was strongest in older adults and in people who were "
        "already at risk of type 2 diabetes.",
    ),
    (
        "en",
        "Terms of use: by creating an account you agree not to share your login "
        "credentials, not to use the service for unlawful purposes, and to keep the contact "
        "information in your profile up to date. We may suspend accounts that violate these "
        "terms. You can close your account at any time from the settings page; your data will "
        "be deleted within 30 days, except where we are required by law to keep it.",
    ),
    ("en", "Battery low"),
    ("en", "Save changes"),
    ("en", "No results found for your search."),
    ("en", "Out of stock — notify me when available"),
    ("es", "Añadir al carrito"),
    ("es", "Gracias por tu compra. Tu pedido será enviado en un plazo de dos días hábiles."),
    ("es", "Hola, quisiera cambiar la dirección de entrega de mi pedido. ¿Todavía es posible?"),
    ("es", "No hay mal que por bien no venga."),
    (
        "es",
        "El museo abrirá sus puertas de nueve de la mañana a seis de la tarde durante todo "
        "el verano, y la entrada será gratuita los domingos.",
    ),
    (
        "es",
        "Estimado cliente:\n\nLe informamos de que su suscripción se renovará "
        "automáticamente el próximo mes. Si desea cancelarla, puede hacerlo desde su perfil "
        "antes de la fecha de renovación.\n\nAtentamente,\nEl equipo de atención al cliente",
    ),
    ("fr", "Mot de passe oublié ?"),
    ("fr", "Votre colis a été livré ce matin à 10 h 15."),
    ("fr", "Il ne faut pas vendre la peau de l'ours avant de l'avoir tué."),
    (
        "fr",
        "Bonjour, je n'arrive pas à me connecter à mon compte depuis hier. Pourriez-vous "
        "m'aider, s'il vous plaît ?",
    ),
    (
        "fr",
        "Cette veste imperméable et respirante est idéale pour la randonnée. Elle se plie "
        "dans sa propre poche et ne pèse que 300 grammes.",
    ),
    (
        "fr",
        "Le gouvernement a annoncé mercredi une hausse du salaire minimum de 2 % à partir "
        "du 1er janvier.",
    ),
    ("de", "Einstellungen speichern"),
    ("de", "Vielen Dank für Ihre Bestellung!"),
    ("de", "Das ist nicht mein Bier."),
    (
        "de",
        "Leider ist der gewünschte Artikel derzeit nicht vorrätig. Wir informieren Sie "
        "gerne per E-Mail, sobald er wieder verfügbar ist.",
    ),
    (
        "de",
        "Der Zug nach München hat heute etwa zwanzig Minuten Verspätung, weil es auf der "
        "Strecke eine Signalstörung gibt.",
    ),
    ("it", "Il pagamento è stato rifiutato. Controlla i dati della carta e riprova."),
    ("it", "Chi dorme non piglia pesci."),
    (
        "it",
        "Questa macchina per il caffè prepara espresso e cappuccino in meno di un minuto "
        "ed è facile da pulire.",
    ),
    ("pt", "Seu pedido foi enviado e chegará em até cinco dias úteis."),
    ("pt", "Olá! Gostaria de saber se vocês fazem entregas aos sábados."),
    ("pt", "Quem não arrisca não petisca."),
    ("ja", "パスワードを忘れた場合は、こちらをクリックしてください。"),
    ("ja", "ご注文ありがとうございます。商品は三日以内に発送いたします。"),
    ("ja", "明日は全国的に晴れるでしょう。"),
    ("zh", "欢迎使用我们的应用程序！"),
    ("zh", "您的订单已发货，预计三天内送达。"),
    ("zh", "如果您有任何问题，请随时与我们联系。"),
    ("ru", "Спасибо за ваш заказ! Мы свяжемся с вами в ближайшее время."),
    ("ru", "Не откладывай на завтра то, что можно сделать сегодня."),
    ("ru", "Сегодня в Москве ожидается небольшой снег и температура около минус пяти градусов."),
    ("ar", "شكرا لتواصلك معنا. سنرد على رسالتك في أقرب وقت ممكن."),
    ("ar", "تم تحديث كلمة المرور بنجاح."),
]
TARGETS = [
    "French",
    "Spanish",
    "German",
    "Italian",
    "Portuguese",
    "Japanese",
    "Chinese",
    "English",
    "Korean",
    "Dutch",
    "Polish",
    "Arabic",
]
LANG_NAME = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "ja": "Japanese",
    "zh": "Chinese",
    "ru": "Russian",
    "ar": "Arabic",
}


def make_translate(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for lang, text in SOURCES:
        options = [t for t in TARGETS if t != LANG_NAME[lang]]
        for target in rng.sample(options, 4):  # the same string shipped to several locales
            rows.append({"text": text, "target_lang": target})
    rng.shuffle(rows)
    return [{"id": f"tr-{i:04d}", **row} for i, row in enumerate(rows, 1)]


REVIEWS = [
    "The blender is loud but crushes ice in seconds.",
    "Arrived two weeks late and the box was crushed.",
    "Exactly as described, would buy again.",
    "The app crashes every time I open the camera.",
    "Decent value for the price, nothing special.",
    "Customer service never answered my emails.",
    "Battery easily lasts a full day of heavy use.",
    "The color faded after the first wash.",
]
TICKETS = [
    "I was charged twice this month",
    "How do I export my data to CSV?",
    "The login page shows a blank screen",
    "Can I upgrade to the annual plan mid-cycle?",
    "Your courier left the parcel in the rain",
    "Please delete my account",
]
PASSAGES = [
    "Remote work has changed how companies think about offices. Many firms now keep smaller "
    "spaces designed for meetings rather than desks, and some have moved to shared hubs in "
    "several cities. Employees report saving time on commuting, but managers worry about "
    "onboarding new staff and keeping teams connected. Surveys suggest that most workers "
    "prefer a hybrid arrangement of two or three office days a week.",
    "The town's library reopened after an eighteen-month renovation. The building now has a "
    "solar roof, a makerspace with 3D printers, and a quiet floor for students. Opening hours "
    "were extended to 10 p.m. on weekdays. The project cost 4.2 million euros, a quarter of "
    "which came from a regional grant, and came in slightly under budget.",
    "Meeting notes, product sync. Attendees: Priya, Tom, Lena. Priya reported that the beta "
    "has 1,200 active users and the crash rate fell to 0.4%. Tom said the payment provider "
    "migration slips by one week because of a certification delay. Lena proposed dropping "
    "the dark-mode feature from this release to protect the launch date; the group agreed. "
    "Next sync on Thursday.",
    "Honeybees communicate the location of food through a waggle dance. The angle of the "
    "dance relative to vertical indicates the direction of the source relative to the sun, "
    "and the duration of the waggle run encodes distance. Foragers that watch the dance can "
    "find flowers several kilometres away with surprising accuracy.",
]
CODE_SNIPPETS = [
    (
        "Python",
        "def average(nums):\n    total = 0\n    for n in nums:\n        total += n\n"
        "    return total / len(nums)\n",
        "it crashes when the list is empty",
    ),
    (
        "JavaScript",
        "async function loadUsers() {\n  const res = fetch('/api/users');\n"
        "  return res.json();\n}\n",
        "it returns a promise error instead of the users",
    ),
    (
        "Python",
        "def add_item(item, items=[]):\n    items.append(item)\n    return items\n",
        "items from earlier calls keep showing up",
    ),
    (
        "Java",
        "for (String name : names) {\n    if (name.isEmpty()) {\n"
        "        names.remove(name);\n    }\n}\n",
        "it throws ConcurrentModificationException",
    ),
    (
        "SQL",
        "SELECT customer_id, COUNT(*)\nFROM orders\nWHERE status = 'paid'\n"
        "GROUP BY customer_id\nHAVING created_at > '2024-01-01';\n",
        "the query is rejected",
    ),
    (
        "Go",
        "func sum(xs []int) int {\n    var total int\n    for i := 0; i <= len(xs); i++ {\n"
        "        total += xs[i]\n    }\n    return total\n}\n",
        "it panics at runtime",
    ),
]
CODE_TASKS = [
    "parses an ISO 8601 date string and returns the weekday name",
    "deduplicates a list while preserving order",
    "retries an HTTP request with exponential backoff",
    "reads a CSV file and prints the average of the 'price' column",
    "validates an IBAN",
    "merges two sorted linked lists",
    "converts a Roman numeral to an integer",
    "implements an LRU cache with a fixed capacity",
    "streams lines from a large log file and counts status codes",
    "flattens an arbitrarily nested list",
]
LANGS = ["Python", "TypeScript", "Go", "Rust", "Java", "C#", "Kotlin", "Ruby"]
FACTS = [
    "What is the capital of Australia?",
    "Who wrote 'One Hundred Years of Solitude'?",
    "When did the Berlin Wall fall?",
    "What is the boiling point of water at sea level in Fahrenheit?",
    "Which planet has the most moons?",
    "Who painted the ceiling of the Sistine Chapel?",
    "What does DNA stand for?",
    "How many bones are in the adult human body?",
    "What is the largest desert in the world?",
    "Which element has the chemical symbol Fe?",
    "What currency is used in Switzerland?",
    "Who was the first woman to win a Nobel Prize?",
    "Where is Mount Kilimanjaro?",
    "What year did the first iPhone come out?",
    "What is the speed of light in a vacuum?",
    "Which ocean is the deepest?",
    "What language is spoken in Brazil?",
    "Who invented the telephone?",
    "What is the smallest prime number?",
    "When is the summer solstice in the northern hemisphere?",
    "What is the tallest mountain in Africa?",
    "Which country hosted the 2016 Summer Olympics?",
    "What is the main ingredient of guacamole?",
    "Who is the author of 'Pride and Prejudice'?",
    "What is the freezing point of water in Kelvin?",
    "Which organ produces insulin?",
    "What is the longest river in Europe?",
    "How many players are on a volleyball team on court?",
    "What is the chemical formula of table salt?",
    "Who composed 'The Four Seasons'?",
]
CHATS = [
    "Hi! How's your day going?",
    "Hey, I just got back from a long trip and I'm exhausted. Any tips for getting over jet lag?",
    "I'm feeling nervous about my job interview tomorrow. Can you help me calm down?",
    "Good morning! What should I cook tonight? I have rice, eggs and some spinach.",
    "Thanks for the help yesterday, the recipe worked great!",
    "Should I learn guitar or piano first? I'm 35 and have never played an instrument.",
    "Tell me a joke about programmers.",
    "I'm bored. Let's chat about movies — what kind do you like?",
    "My cat keeps waking me up at 5 a.m. What should I do?",
    "Pretend you are a pirate captain and greet the new crew.",
    "Act as my Spanish conversation partner and ask me about my weekend.",
    "Let's play twenty questions. I'm thinking of an animal.",
    "I'm struggling to stay motivated at the gym. Any advice?",
    "Hello! Can you recommend a podcast for long drives?",
    "What do you think about pineapple on pizza?",
    "I'm stressed about moving to a new city next month. How can I make friends there?",
    "You are a friendly barista. A customer walks in looking tired. Start the conversation.",
    "Good evening! I can't decide between a weekend in the mountains or at the beach.",
    "Help me decide: should I adopt a dog or a cat if I live in a small apartment?",
    "Hey, quick one: how do I politely decline a wedding invitation from a coworker?",
]
TOPICS = [
    "a lighthouse keeper who finds a message in a bottle",
    "the first day of autumn",
    "a robot learning to cook",
    "a small bakery that opens at midnight",
    "two rival chess players stuck in an elevator",
    "a city where it never stops raining",
    "a grandmother's recipe book",
    "the last bus home",
]
ANALYSES = [
    "Compare PostgreSQL and MongoDB for an e-commerce catalogue with frequent schema changes. "
    "Cover consistency, query flexibility, operational cost and team skills, and end with a "
    "recommendation.",
    "What are the pros and cons of a four-day work week for a 50-person software company?",
    "Analyze the following quarterly figures and describe the trend: "
    "Q1 revenue 1.2M, costs 0.9M; Q2 revenue 1.4M, costs 1.1M; Q3 revenue 1.3M, costs 1.2M; "
    "Q4 revenue 1.6M, costs 1.25M.",
    "Evaluate the risks of migrating a monolith to microservices when the team has six engineers.",
    "Extract the names, dates and amounts "
    "from this invoice text and return them as JSON: 'Invoice 2291 issued 3 March 2024 to "
    "Helena Brandt, total due EUR 1,480.00 by 2 April 2024.'",
    "Explain how rising interest rates affect housing prices and rental markets.",
    "Discuss the impact of self-checkout machines on supermarket staffing and customer experience.",
    "Assess the strengths and "
    "weaknesses of this marketing plan: launch on social media only, a single influencer "
    "partnership, and a 20% discount for the first week.",
    "Why do some open-source "
    "projects thrive while others are abandoned? Identify the main factors.",
    "Compare electric scooters, bikes and buses for a 5 km daily commute in terms of cost, "
    "time, safety and emissions.",
]


def _mixed_by_type(rng: random.Random) -> dict[str, list[str]]:
    t: dict[str, list[str]] = {k: [] for k in TASK_TYPES}
    for i in range(30):
        revs = rng.sample(REVIEWS, rng.randint(2, 5))
        listing = "\n".join(f"{j}. {r}" for j, r in enumerate(revs, 1))
        t["classification"].append(
            rng.choice(
                [
                    f"Classify the sentiment of each review as positive, negative or "
                    f"neutral:\n{listing}",
                    f"Label each customer message with one category (billing, technical, shipping, "
                    f"account): {rng.choice(TICKETS)}.",
                    f"Which of the following categories fits this ticket best — billing, technical "
                    f'or other? "{rng.choice(TICKETS)}"',
                    f"Categorize these reviews by product issue (quality, delivery, software, "
                    f"support):\n{listing}",
                ]
            )
        )
        t["simple_qa"].append(FACTS[i % len(FACTS)])
        lang, text = SOURCES[rng.randrange(len(SOURCES))]
        target = rng.choice([x for x in TARGETS if x != LANG_NAME[lang]])
        t["translation"].append(
            rng.choice(
                [
                    f"Translate into {target}:\n\n{text}",
                    f"Please translate the following text to {target}, keeping the tone:\n{text}",
                    f'How would you say this in {target}? "{text}"',
                    f"Translate this from {LANG_NAME[lang]} to {target}: {text}",
                ]
            )
        )
        passage = PASSAGES[i % len(PASSAGES)]
        t["summarization"].append(
            rng.choice(
                [
                    f"Summarize the following in two sentences:\n\n{passage}",
                    f"TL;DR this for me:\n{passage}",
                    f"{passage}\n\nWhat are the key points of the text above? Use bullet points.",
                    f"Write a one-line summary for a newsletter:\n\n{passage}",
                ]
            )
        )
        t["chat"].append(CHATS[i % len(CHATS)] if i < len(CHATS) else rng.choice(CHATS[:12]))
        task, lng = CODE_TASKS[i % len(CODE_TASKS)], rng.choice(LANGS)
        t["code_generation"].append(
            rng.choice(
                [
                    f"Write a {lng} function that {task}.",
                    f"Implement a small {lng} module that "
                    f"{task}. Include type hints or annotations and two unit tests.",
                    f"Create a command-line script in {lng} that {task}. "
                    f"It must handle invalid input gracefully and print a helpful error.",
                ]
            )
        )
        clang, snippet, symptom = CODE_SNIPPETS[i % len(CODE_SNIPPETS)]
        t["code_review"].append(
            rng.choice(
                [
                    f"Can you review this {clang} code? "
                    f"{symptom.capitalize()}.\n\n```\n{snippet}```",
                    f"Why does this code fail? {symptom.capitalize()}.\n```\n{snippet}```",
                    f"Please fix the bug in this {clang} snippet ({symptom}):\n```\n{snippet}```",
                ]
            )
        )
        t["analysis"].append(ANALYSES[i % len(ANALYSES)])
        topic = rng.choice(TOPICS)
        t["creative_writing"].append(
            rng.choice(
                [
                    f"Write a short poem about {topic}.",
                    f"Write a 300-word story about {topic}, "
                    f"told from the point of view of a child.",
                    f"Compose a haiku about {topic}.",
                    f"Draft a catchy slogan for a coffee brand inspired by {topic}. "
                    "Give three options.",
                    f"Write the opening paragraph of a mystery novel about {topic}.",
                ]
            )
        )
        a, b, c = rng.randint(3, 19), rng.randint(2, 9), rng.randint(20, 90)
        t["deep_reasoning"].append(
            rng.choice(
                [
                    f"A train leaves at 9:00 travelling at {c} km/h; another leaves "
                    f"the same station at 10:00 at {c + 20} km/h on the same track. "
                    "When does the second catch up? "
                    f"Show each step.",
                    f"Prove that the sum of the first {a} odd numbers is "
                    f"{a * a}, and then prove the general case by induction.",
                    f"Solve for x: {a}x + {b} = {a * 3 + b}. "
                    "Then explain why the solution is unique.",
                    "Three boxes are labelled apples, oranges and mixed, and every "
                    "label is wrong. "
                    f"You may draw one fruit from one box. How can you relabel all {3} boxes "
                    f"correctly? Explain the logic.",
                    f"What is the probability of rolling at least "
                    f"one six in {b} throws of a fair die? Derive the formula.",
                    f"A shop sells pens at ${b} and notebooks at ${a}. Maya spent "
                    f"${a * 2 + b * 3} and bought 5 items. How many of each did she buy? "
                    "Calculate and check your answer.",
                ]
            )
        )
    return t


def make_mixed(rng: random.Random) -> list[dict[str, str]]:
    prompts = [p for items in _mixed_by_type(rng).values() for p in items]
    rng.shuffle(prompts)
    return [{"id": f"mx-{i:04d}", "prompt": p} for i, p in enumerate(prompts, 1)]


def _write(name: str, rows: list[dict[str, str]]) -> None:
    with (OUT / name).open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{name}: {len(rows)} records")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    _write("translate.jsonl", make_translate(random.Random(SEED)))
    _write("mixed.jsonl", make_mixed(random.Random(SEED + 1)))


if __name__ == "__main__":
    main()
