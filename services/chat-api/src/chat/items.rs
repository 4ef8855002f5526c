//! Messages added to a conversation without asking the provider (the OpenAI
//! Conversations API's items): a new conversation with its first messages,
//! or messages appended to an existing one, ordered like turns (an append
//! claims the conversation, so it lands after any turn in progress and never
//! between a user message and its answer).

use uuid::Uuid;

use super::{ChatService, spans, title_from, validate};
use crate::db::openai as store;
use crate::db::turns::{self, NewTurn, Stored, UsageDelta};
use crate::error::ApiError;
use crate::llm::Role;

impl ChatService {
    fn checked(&self, messages: &[(Role, String)]) -> Result<Vec<(Role, String)>, ApiError> {
        if messages.len() > validate::MAX_HISTORY_ITEMS {
            return Err(ApiError::bad_request(
                "too_many_items",
                format!("{} items; the limit is {}", messages.len(), validate::MAX_HISTORY_ITEMS),
            ));
        }
        messages
            .iter()
            .map(|(role, text)| Ok((*role, validate::message(text, self.settings.max_message_chars)?)))
            .collect()
    }

    /// Creates a conversation holding `messages` (possibly none) and its
    /// `metadata`, in one transaction; returns its id and the messages' ids.
    pub async fn create_conversation(
        &self,
        user_id: Uuid,
        messages: &[(Role, String)],
        metadata: &serde_json::Value,
    ) -> Result<(Uuid, Vec<Uuid>), ApiError> {
        let messages = self.checked(messages)?;
        let conversation_id = Uuid::new_v4();
        let title = messages.iter().find(|(role, _)| *role == Role::User).map(|(_, t)| title_from(t).to_owned());
        let ids = turns::new_ids(messages.len());
        let new_turn = NewTurn::opening(conversation_id, user_id, title.as_deref(), messages, ids.clone());
        let create = async {
            let mut tx = self.pool.begin().await?;
            turns::create(&mut tx, new_turn).await?;
            store::set_metadata(&mut *tx, conversation_id, metadata).await?;
            tx.commit().await
        };
        spans::observed(&self.metrics, spans::CREATE_CONVERSATION, create).await?;
        self.metrics.conversations_created.inc();
        Ok((conversation_id, ids))
    }

    /// Appends `messages` to the user's conversation, after any turn in
    /// progress; returns them as stored, with their ids. Another user's
    /// conversation is a 404.
    pub async fn append_messages(
        &self,
        conversation_id: Uuid,
        user_id: Uuid,
        messages: &[(Role, String)],
    ) -> Result<Vec<(Uuid, Role, String)>, ApiError> {
        let messages = self.checked(messages)?;
        // No context to read (limit 0), no summary to ask for: no provider call follows.
        let (claim, _) = self.order.claim_existing(conversation_id, user_id, 0, false).await?;
        // A conversation created empty takes its title from its first user item.
        let title = messages.iter().find(|(role, _)| *role == Role::User).map(|(_, t)| title_from(t).to_owned());
        let ids = turns::new_ids(messages.len());
        let new_turn = NewTurn {
            conversation_id,
            user_id,
            claim: Some(claim.token()),
            model: None,
            title: title.as_deref(),
            delta: UsageDelta::default(),
            messages: messages.clone(),
            ids: ids.clone(),
        };
        let append = async {
            let mut conn = self.pool.acquire().await?;
            turns::append(&mut conn, new_turn).await
        };
        match spans::observed(&self.metrics, spans::APPEND_TURN, append).await? {
            Stored::Ok => {
                claim.stored();
                Ok(ids.into_iter().zip(messages).map(|(id, (role, text))| (id, role, text)).collect())
            }
            Stored::NotFound => Err(ApiError::conversation_not_found()),
            Stored::ClaimLost => Err(ApiError::conversation_busy(self.settings.turn_wait)),
        }
    }
}
